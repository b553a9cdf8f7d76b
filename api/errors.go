package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

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
		w.Header().Set("WWW-Authenticate", h.cfg.Auth.Authn.Challenge())
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
