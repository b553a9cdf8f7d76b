package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/oci"
)

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// asOCIError finds the OCI error in err's chain, or makes one: a bare Code
// becomes an Error with the code's message, anything else is UNKNOWN.
func asOCIError(err error) *oci.Error {
	var e *oci.Error
	if errors.As(err, &e) {
		return e
	}
	var c oci.Code
	if errors.As(err, &c) {
		return &oci.Error{Code: c, Message: c.Message}
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return oci.Wrap(oci.Unavailable, err, "request cancelled or timed out")
	}
	return oci.Wrap(oci.Unknown, err, "internal error")
}

// writeError is the one place that writes the spec's error body.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := asOCIError(err)
	status := e.HTTPStatus()
	msg := e.Message
	if msg == "" {
		msg = e.Code.Message
	}
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelError
	}
	h.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "code", e.Code.Name, "err", err)
	body, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: e.Code.Name, Message: msg, Detail: e.Detail}}})
	if status == http.StatusUnauthorized && h.cfg.Auth != nil {
		w.Header().Set("WWW-Authenticate", h.challenge(r))
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", itoa(int64((e.RetryAfter+time.Second-1)/time.Second)))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", itoa(int64(len(body))))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// challenge is the WWW-Authenticate value of a 401 to r: a Bearer
// challenge names the scope the request needs.
func (h *Handler) challenge(r *http.Request) string {
	c, ok := h.cfg.Auth.Authn.(auth.ScopedChallenger)
	if !ok {
		return h.cfg.Auth.Authn.Challenge()
	}
	return c.ChallengeFor(r, h.requestScope(r))
}

// requestScope is the token scope a /v2/ request needs ("" for the base
// route and the rest): "repository:NAME:pull", "repository:NAME:pull,push"
// for a push (clients pull what they push), "repository:NAME:delete", or
// "registry:catalog:*".
//
// A pull that is the mirror's (see Mirroring) needs its scope on the
// mirror's repository, <NS>/<repo>, where the policy applies.
func (h *Handler) requestScope(r *http.Request) string {
	rt := parseRoute(r.URL.Path)
	switch rt.kind {
	case routeUnknown, routeBase:
		return ""
	case routeCatalog:
		return "registry:catalog:*"
	}
	if validateName(rt.name) != nil {
		return ""
	}
	if mirrored, err := h.routeMirror(r, rt); err == nil {
		rt = mirrored
	}
	switch routeAction(rt.kind, r.Method) {
	case auth.Push:
		return "repository:" + rt.name + ":pull,push"
	case auth.Delete:
		return "repository:" + rt.name + ":delete"
	}
	return "repository:" + rt.name + ":pull"
}
