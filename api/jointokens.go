package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/meshreg/meshreg/api/oci"
)

// JoinTokenIssuer is an optional ability of a Node: it issues join tokens
// (POST /_meshreg/v1/join-tokens, `meshreg token create`) that a new node
// presents with --join-token to be admitted to the cluster.
type JoinTokenIssuer interface {
	// CreateJoinToken issues a token valid for ttl (a default if 0). An
	// error wrapping ErrBadJoinTokenRequest is the caller's mistake.
	CreateJoinToken(ttl time.Duration) (token string, expires time.Time, err error)
}

// ErrBadJoinTokenRequest marks a join token request that cannot be served
// as asked (a TTL out of range).
var ErrBadJoinTokenRequest = errors.New("bad join token request")

// joinTokenResponse is the body of a successful POST /_meshreg/v1/join-tokens.
type joinTokenResponse struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// createJoinToken serves POST /_meshreg/v1/join-tokens[?ttl=DURATION]. Like
// the other admin endpoints it answers only requests from loopback until
// the API has authentication: a token admits a node to the cluster.
func (h *Handler) createJoinToken(w http.ResponseWriter, r *http.Request) {
	if err := h.joinToken(w, r); err != nil {
		h.writeError(w, r, err)
	}
}

func (h *Handler) joinToken(w http.ResponseWriter, r *http.Request) error {
	issuer, ok := h.node.(JoinTokenIssuer)
	if !ok {
		return oci.Errorf(oci.Unsupported, "this node does not issue join tokens").WithStatus(http.StatusNotFound)
	}
	var ttl time.Duration
	if s := r.URL.Query().Get("ttl"); s != "" {
		var err error
		if ttl, err = time.ParseDuration(s); err != nil || ttl <= 0 {
			return oci.Errorf(oci.Unsupported, "ttl %q is not a positive duration (e.g. 30m, 2h)", truncate(s)).WithStatus(http.StatusBadRequest)
		}
	}
	token, expires, err := issuer.CreateJoinToken(ttl)
	switch {
	case errors.Is(err, ErrBadJoinTokenRequest):
		return oci.Wrap(oci.Unsupported, err, err.Error()).WithStatus(http.StatusBadRequest)
	case err != nil:
		return oci.Wrap(oci.Unavailable, err, "cannot issue a join token: "+err.Error())
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, r, http.StatusCreated, "application/json", joinTokenResponse{Token: token, Expires: expires.UTC()})
	return nil
}
