package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/oci"
)

type identityKey struct{}

// identityFrom returns the identity authorize stored in ctx (Anonymous
// when authentication is off or outside a request).
func identityFrom(ctx context.Context) auth.Identity {
	id, _ := ctx.Value(identityKey{}).(auth.Identity)
	return id
}

// routeAction is the right a /v2/ request needs on its repository.
// Everything about an upload session (status and cancel included) is push.
func routeAction(k routeKind, method string) auth.Action {
	switch {
	case k == routeUploads || k == routeUpload:
		return auth.Push
	case method == http.MethodPut || method == http.MethodPatch || method == http.MethodPost:
		return auth.Push
	case method == http.MethodDelete:
		return auth.Delete
	}
	return auth.Pull
}

// authenticate finds who r comes from; a wrong password is 401 with the
// challenge, never anonymous access.
func (h *Handler) authenticate(r *http.Request) (auth.Identity, error) {
	id, err := h.cfg.Auth.Authn.Authenticate(r)
	if errors.Is(err, auth.ErrBadCredentials) {
		return auth.Anonymous, oci.Errorf(oci.Unauthorized, "wrong user name or password")
	}
	var te *auth.TokenError
	if errors.As(err, &te) {
		if h.metrics != nil {
			h.metrics.tokenFailures.WithLabelValues(te.Reason).Inc()
		}
		return auth.Anonymous, oci.Wrap(oci.Unauthorized, err, err.Error()+"; get a new token (docker login)")
	}
	if err != nil {
		return auth.Anonymous, oci.Wrap(oci.Unauthorized, err, "authentication failed")
	}
	return id, nil
}

// refuse is the error for id lacking action on what: 401 with the
// challenge for anonymous clients (credentials may help), 403 DENIED for
// an authenticated user (they would not).
func refuse(id auth.Identity, action auth.Action, what string) error {
	if id.IsAnonymous() {
		return oci.Errorf(oci.Unauthorized, "authentication required: anonymous clients may not %s %s; log in (docker login)", action, what)
	}
	return oci.Errorf(oci.Denied, "user %q lacks the %s right on %s: ask for it in the access policy", id.User, action, what)
}

// authorize is the one access check of a /v2/ request, called by dispatch
// once the route is known. It stores the identity in the request's
// context (for the catalog's filter) and returns the request to go on
// with: a cross-repository mount whose source the client may not pull
// loses its mount and becomes a plain upload session, as the spec lets a
// registry do, so the client uploads the bytes it claims to have.
func (h *Handler) authorize(r *http.Request, rt route) (*http.Request, error) {
	g := h.cfg.Auth
	id, err := h.authenticate(r)
	if err != nil {
		if rt.kind != routeBase && rt.kind != routeCatalog {
			h.auditRefusal(r, id, routeAction(rt.kind, r.Method), rt, err)
		}
		return r, err
	}
	r = r.WithContext(context.WithValue(r.Context(), identityKey{}, id))
	switch rt.kind {
	case routeBase:
		// docker login checks its credentials here; an anonymous client
		// gets the challenge and goes on without credentials.
		if id.IsAnonymous() && id.Grant == nil { // an anonymous token is a login too
			return r, oci.Errorf(oci.Unauthorized, "authentication required")
		}
		return r, nil
	case routeCatalog:
		if id.Grant != nil {
			if !id.Grant.Catalog() {
				return r, oci.Errorf(oci.Unauthorized, "the bearer token does not grant the catalog: ask the token service for scope registry:catalog:*")
			}
			// Filtered by what the user may pull, as with Basic auth.
			r = r.WithContext(context.WithValue(r.Context(), identityKey{}, auth.Identity{User: id.User}))
		}
		return r, nil // filtered by what id may pull
	}
	action := routeAction(rt.kind, r.Method)
	if id.Grant != nil && !id.Grant.Allows(rt.name, action) && (id.Grant.External() || g.Authz.Authorize(auth.Identity{User: id.User}, rt.name, action)) {
		// 401 with the challenge naming the scope: the client asks the
		// token service for it (the policy would grant it). When the
		// policy would not, the answer below is the same as with Basic
		// auth: 403 DENIED for a user, 401 for anonymous.
		err := oci.Errorf(oci.Unauthorized, "the bearer token does not grant %s on repository %s: ask the token service for scope %s",
			action, truncate(rt.name), h.requestScope(r))
		h.auditRefusal(r, id, action, rt, err)
		return r, err
	}
	if !g.Authz.Authorize(id, rt.name, action) {
		err := refuse(id, action, "repository "+truncate(rt.name))
		h.auditRefusal(r, id, action, rt, err)
		return r, err
	}
	if rt.kind == routeUploads {
		q := r.URL.Query()
		if from := q.Get("from"); q.Has("mount") && from != "" && !g.Authz.Authorize(id, from, auth.Pull) {
			q.Del("mount")
			q.Del("from")
			u := *r.URL
			u.RawQuery = q.Encode()
			r2 := r.Clone(r.Context())
			r2.URL = &u
			return r2, nil
		}
	}
	return r, nil
}

// mayPull reports whether the request's client may pull repo (always,
// with authentication off).
func (h *Handler) mayPull(ctx context.Context, repo string) bool {
	return h.cfg.Auth == nil || h.cfg.Auth.Authz.Authorize(identityFrom(ctx), repo, auth.Pull)
}

// adminOnly guards the cluster's mutating admin endpoints: with
// authentication on, the caller needs the admin right; without it, only
// clients on the node's own machine (loopback) are served.
func (h *Handler) adminOnly(fn http.HandlerFunc) http.HandlerFunc {
	loop := h.loopbackOnly(h.auditAdmin(fn, auth.Anonymous))
	return func(w http.ResponseWriter, r *http.Request) {
		if h.cfg.Auth == nil {
			loop(w, r)
			return
		}
		id, err := h.authenticate(r)
		if err == nil && !h.cfg.Auth.Authz.Authorize(id, "", auth.Admin) {
			err = refuse(id, auth.Admin, "the cluster ("+r.Method+" "+truncate(r.URL.Path)+")")
		}
		if err != nil {
			h.logDenied(r, id, auth.Admin, adminAttrs(r), err)
			h.writeError(w, r, err)
			return
		}
		h.auditAdmin(fn, id)(w, r)
	}
}

// auditRefusal audits a refused write (push or delete); a refused read
// is not an audit event.
func (h *Handler) auditRefusal(r *http.Request, id auth.Identity, action auth.Action, rt route, err error) {
	if action != auth.Push && action != auth.Delete {
		return
	}
	attrs := []slog.Attr{slog.String("repository", truncate(rt.name))}
	if rt.ref != "" && rt.kind != routeUpload {
		attrs = append(attrs, slog.String("reference", truncate(rt.ref)))
	}
	h.logDenied(r, id, action, attrs, err)
}

// adminAttrs names an admin request in its audit line.
func adminAttrs(r *http.Request) []slog.Attr {
	return []slog.Attr{slog.String("method", r.Method), slog.String("path", truncate(r.URL.Path))}
}

// auditAdmin serves fn and writes the audit line of the admin request it
// served: result ok for a 2xx answer, error with the status otherwise.
func (h *Handler) auditAdmin(fn http.HandlerFunc, id auth.Identity) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		fn(rec, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
		attrs := []slog.Attr{slog.String("user", id.String()), slog.String("action", string(auth.Admin))}
		if rec.op != "" {
			attrs = append(attrs, slog.String("op", rec.op))
		}
		attrs = append(attrs, adminAttrs(r)...)
		attrs = append(attrs, slog.String("client", clientAddr(r)))
		if rec.status/100 == 2 {
			attrs = append(attrs, slog.String("result", "ok"))
		} else {
			attrs = append(attrs, slog.String("result", "error"), slog.Int("status", rec.status))
		}
		what := adminWhat(r)
		if rec.op == "revoke" {
			what = "follower revocation"
		}
		audit(r.Context(), h.log, "admin "+what, attrs...)
	}
}

// adminWhat is the admin action of r, for the audit line's message.
func adminWhat(r *http.Request) string {
	switch {
	case r.Method == http.MethodDelete && r.PathValue("id") != "":
		return "member removal"
	case r.Method == http.MethodPost && r.URL.Path == "/_meshreg/v1/join-tokens":
		return "join token creation"
	case r.Method == http.MethodPost && r.URL.Path == "/_meshreg/v1/gc":
		return "garbage collection"
	case r.Method == http.MethodPut && r.URL.Path == "/_meshreg/v1/policy":
		return "policy change"
	}
	return "request"
}

// statusRecorder remembers the status an http.Handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
	// op is what an admin handler did, when one request may do either of
	// two things (a member removed or a follower revoked).
	op string
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
