package api

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/meshreg/meshreg/api/oci"
)

// PolicyKeeper is an optional ability of a Node: the cluster's content
// policy (retention, immutable tags, quotas), replicated through Raft
// (GET and PUT /_meshreg/v1/policy, GET /_meshreg/v1/policy/usage, admin;
// `meshreg policy show|set`).
type PolicyKeeper interface {
	// Policy returns the policy document in force (YAML), nil if none.
	Policy(ctx context.Context) ([]byte, error)
	// SetPolicy validates doc and commits it; an error wrapping
	// ErrInvalidPolicy says what is wrong with it (and on which line).
	SetPolicy(ctx context.Context, doc []byte) error
	// PolicyUsage is each repository's usage and quota, as this node
	// applied them.
	PolicyUsage(ctx context.Context) (PolicyUsage, error)
}

// ErrInvalidPolicy marks a policy document that does not validate.
var ErrInvalidPolicy = errors.New("invalid policy")

// MaxPolicyBytes bounds a policy document (the replicated setting's bound).
const MaxPolicyBytes = 64 << 10

// PolicyUsage is the answer to GET /_meshreg/v1/policy/usage.
type PolicyUsage struct {
	// Index is the applied Raft index the usage was read at.
	Index        uint64      `json:"index"`
	Repositories []RepoUsage `json:"repositories"`
	// Truncated: more repositories hold bytes than listed.
	Truncated bool `json:"truncated,omitempty"`
}

// RepoUsage is one repository's usage, with its quota if one governs it.
type RepoUsage struct {
	Repo  string `json:"repository"`
	Bytes int64  `json:"bytes"`
	Quota int64  `json:"quota,omitempty"`
	Rule  int    `json:"rule,omitempty"`
}

func (h *Handler) policyKeeper(w http.ResponseWriter, r *http.Request) (PolicyKeeper, bool) {
	pk, ok := h.node.(PolicyKeeper)
	if !ok {
		h.writeError(w, r, oci.Errorf(oci.Unsupported, "this node keeps no content policy").WithStatus(http.StatusNotFound))
	}
	return pk, ok
}

// getPolicy serves GET /_meshreg/v1/policy: the YAML document in force
// (an empty body and 204 when none was set).
func (h *Handler) getPolicy(w http.ResponseWriter, r *http.Request) {
	pk, ok := h.policyKeeper(w, r)
	if !ok {
		return
	}
	doc, err := pk.Policy(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	if doc == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(doc)
}

// putPolicy serves PUT /_meshreg/v1/policy with the YAML document.
func (h *Handler) putPolicy(w http.ResponseWriter, r *http.Request) {
	pk, ok := h.policyKeeper(w, r)
	if !ok {
		return
	}
	doc, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxPolicyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		h.writeError(w, r, oci.Errorf(oci.SizeInvalid, "the policy document is larger than %d bytes", MaxPolicyBytes).WithStatus(http.StatusRequestEntityTooLarge))
		return
	case err != nil:
		h.writeError(w, r, oci.Wrap(oci.Unknown, err, "reading the policy document"))
		return
	}
	if err := pk.SetPolicy(r.Context(), doc); err != nil {
		if errors.Is(err, ErrInvalidPolicy) {
			err = oci.Wrap(oci.Unsupported, err, err.Error()).WithStatus(http.StatusBadRequest)
		}
		h.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// policyUsage serves GET /_meshreg/v1/policy/usage.
func (h *Handler) policyUsage(w http.ResponseWriter, r *http.Request) {
	pk, ok := h.policyKeeper(w, r)
	if !ok {
		return
	}
	u, err := pk.PolicyUsage(r.Context())
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(u)
}
