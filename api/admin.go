package api

import (
	"errors"
	"net"
	"net/http"
	"net/netip"

	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/oci"
)

// ErrNotMember marks a membership change about a peer that is not a
// member of the cluster: Node.RemoveMember returns an error wrapping it,
// and the API answers 404 MEMBER_UNKNOWN.
var ErrNotMember = errors.New("not a member of the cluster")

// ErrAlreadyRevoked marks a revocation of a follower revoked before: the
// API answers 409 ALREADY_REVOKED.
var ErrAlreadyRevoked = errors.New("already revoked")

// memberUnknown is meshreg's own error code (in the OCI error format) for a
// member the admin API does not know.
var memberUnknown = oci.Code{Name: "MEMBER_UNKNOWN", Status: http.StatusNotFound, Message: "cluster member unknown"}

// alreadyRevoked is meshreg's own error code for a follower revoked before.
var alreadyRevoked = oci.Code{Name: "ALREADY_REVOKED", Status: http.StatusConflict, Message: "follower already revoked"}

// loopbackOnly serves fn only to requests whose TCP peer is a loopback
// address (127.0.0.0/8 or ::1), and answers every other one 403 DENIED.
// The cluster's admin endpoints (removing a member, and every other
// mutating /_meshreg/v1/ route) have no authentication yet, so they are
// for an operator on the node's own machine. Only the connection's own
// address counts: X-Forwarded-For and the like are set by the client and
// prove nothing.
func (h *Handler) loopbackOnly(fn http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			err := oci.Errorf(oci.Denied,
				"%s %s is an admin endpoint, served only to clients on the node's own machine (loopback) until authentication is configured: run the command on the node, e.g. `meshreg cluster remove --node http://127.0.0.1:5000 ID`",
				r.Method, truncate(r.URL.Path))
			h.logDenied(r, auth.Anonymous, auth.Admin, adminAttrs(r), err)
			h.writeError(w, r, err)
			return
		}
		fn(w, r)
	}
}

// fromLoopback reports whether r's TCP peer is a loopback address.
func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}
