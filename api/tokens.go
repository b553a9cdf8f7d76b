package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/token"
	"github.com/meshreg/meshreg/api/oci"
)

// TokenService issues bearer tokens; *token.Service is one.
type TokenService interface {
	// Login checks a user's password.
	Login(user, password string) bool
	// Issue signs a token for id with the requested scopes, as far as the
	// policy grants them; auth.ErrNoSigningKey (wrapped) when there is no
	// key yet.
	Issue(id auth.Identity, service string, scopes []string) (token.Issued, error)
}

var _ TokenService = (*token.Service)(nil)

// maxTokenRequest bounds a token request's query or form.
const maxTokenRequest = 64 << 10

// tokenResponse is the token endpoint's answer (Docker's token spec, with
// OAuth2's access_token for containerd).
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// token is the token endpoint: GET with Basic credentials (or none, for an
// anonymous token) and ?service=&scope=...; or POST of an OAuth2 form
// with grant_type=password (containerd). Bad credentials are 401, charged
// to the client's rate-limit bucket like a refused /v2/ request, and an
// audit line.
func (h *Handler) token(w http.ResponseWriter, r *http.Request) {
	var (
		form     url.Values
		user     string
		password string
		hasCreds bool
	)
	switch r.Method {
	case http.MethodGet:
		if len(r.URL.RawQuery) > maxTokenRequest {
			h.tokenError(w, r, oci.Errorf(oci.Unsupported, "token request query is more than %d bytes", maxTokenRequest).WithStatus(http.StatusBadRequest))
			return
		}
		form = r.URL.Query()
		if r.Header.Get("Authorization") != "" {
			var ok bool
			if user, password, ok = r.BasicAuth(); !ok {
				h.tokenError(w, r, oci.Errorf(oci.Unauthorized, "the token endpoint takes Basic credentials (user name and password)"))
				return
			}
			hasCreds = true
		}
	case http.MethodPost:
		r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequest)
		if err := r.ParseForm(); err != nil {
			h.tokenError(w, r, oci.Wrap(oci.Unsupported, err, "token request form does not parse (or is more than 64 KiB)").WithStatus(http.StatusBadRequest))
			return
		}
		form = r.PostForm
		switch gt := form.Get("grant_type"); gt {
		case "password":
			user, password, hasCreds = form.Get("username"), form.Get("password"), true
		case "refresh_token":
			h.tokenError(w, r, oci.Errorf(oci.Unsupported, "grant_type refresh_token is not supported: this token service issues no refresh tokens; log in with grant_type=password").WithStatus(http.StatusBadRequest))
			return
		default:
			h.tokenError(w, r, oci.Errorf(oci.Unsupported, "grant_type %.40q is not supported: use password (or GET with Basic auth)", gt).WithStatus(http.StatusBadRequest))
			return
		}
	}
	if h.cfg.RateLimits != nil {
		if ref := h.cfg.RateLimits.Allow(ClientFromContext(r.Context()), user, ""); ref != nil {
			secs := max(int64((ref.RetryAfter+time.Second-1)/time.Second), 1)
			w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
			h.tokenError(w, r, oci.Errorf(oci.TooManyRequests, "%s rate limit exceeded for %s (--rate-limits); retry after %ds", ref.Limit, truncate(ref.Subject), secs))
			return
		}
	}
	id := auth.Anonymous
	if hasCreds {
		if !h.cfg.Tokens.Login(user, password) {
			err := oci.Errorf(oci.Unauthorized, "wrong user name or password")
			h.logDenied(r, auth.Anonymous, "login", []slog.Attr{slog.String("claimed_user", truncate(user)), slog.String("endpoint", "token")}, err)
			h.tokenError(w, r, err)
			return
		}
		id = auth.Identity{User: user}
	}
	is, err := h.cfg.Tokens.Issue(id, form.Get("service"), form["scope"])
	if errors.Is(err, auth.ErrNoSigningKey) {
		w.Header().Set("Retry-After", "2")
		h.tokenError(w, r, oci.Wrap(oci.Unavailable, err, err.Error()))
		return
	}
	if errors.Is(err, token.ErrBadRequest) {
		h.tokenError(w, r, oci.Wrap(oci.Unsupported, err, err.Error()).WithStatus(http.StatusBadRequest))
		return
	}
	if err != nil {
		h.log.Error("token service failed", "err", err)
		h.tokenError(w, r, oci.Wrap(oci.Unknown, err, "the token service failed: see the node's log"))
		return
	}
	if h.metrics != nil {
		h.metrics.tokensIssued.Inc()
	}
	h.log.Debug("token issued", "user", id.String(), "access", is.Access, "client", clientAddr(r))
	body, _ := json.Marshal(tokenResponse{Token: is.Token, AccessToken: is.Token,
		ExpiresIn: int64(is.ExpiresIn / time.Second), IssuedAt: is.IssuedAt.Format(time.RFC3339)})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", itoa(int64(len(body))))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// tokenError writes a token endpoint error: the spec's error body, and for
// a 401 a Basic challenge (the token endpoint takes a password, not a
// token).
func (h *Handler) tokenError(w http.ResponseWriter, r *http.Request, err error) {
	e := asOCIError(err)
	status := e.HTTPStatus()
	h.log.Debug("token request failed", "method", r.Method, "status", status, "code", e.Code.Name, "err", err)
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code.Name, Message: e.Message}}})
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="meshreg token service"`)
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", itoa(int64(len(body))))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
