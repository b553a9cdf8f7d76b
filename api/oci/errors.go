// Package oci declares the error codes of the OCI Distribution Specification
// once, with their HTTP status and default message. Code that serves the
// registry returns errors built from these codes; one writer in package api
// turns them into the spec's JSON body.
package oci

import (
	"fmt"
	"net/http"
	"time"
)

// Code is one OCI error code. Codes are comparable values, so a returned
// error can be tested with errors.Is(err, oci.BlobUnknown).
type Code struct {
	Name    string // the spec's code, e.g. "BLOB_UNKNOWN"
	Status  int    // the HTTP status it is served with
	Message string // the default human-readable message
}

func (c Code) Error() string { return c.Name + ": " + c.Message }

// The codes of the OCI Distribution Specification v1.1, plus UNAVAILABLE
// (a write that cannot be committed now) and UNKNOWN (an internal error).
var (
	BlobUnknown         = Code{"BLOB_UNKNOWN", http.StatusNotFound, "blob unknown to registry"}
	BlobUploadInvalid   = Code{"BLOB_UPLOAD_INVALID", http.StatusBadRequest, "blob upload invalid"}
	BlobUploadUnknown   = Code{"BLOB_UPLOAD_UNKNOWN", http.StatusNotFound, "blob upload unknown to registry"}
	DigestInvalid       = Code{"DIGEST_INVALID", http.StatusBadRequest, "provided digest did not match uploaded content"}
	ManifestBlobUnknown = Code{"MANIFEST_BLOB_UNKNOWN", http.StatusBadRequest, "manifest references a manifest or blob unknown to registry"}
	ManifestInvalid     = Code{"MANIFEST_INVALID", http.StatusBadRequest, "manifest invalid"}
	ManifestUnknown     = Code{"MANIFEST_UNKNOWN", http.StatusNotFound, "manifest unknown to registry"}
	NameInvalid         = Code{"NAME_INVALID", http.StatusBadRequest, "invalid repository name"}
	NameUnknown         = Code{"NAME_UNKNOWN", http.StatusNotFound, "repository name not known to registry"}
	SizeInvalid         = Code{"SIZE_INVALID", http.StatusBadRequest, "provided length did not match content length"}
	Unauthorized        = Code{"UNAUTHORIZED", http.StatusUnauthorized, "authentication required"}
	Denied              = Code{"DENIED", http.StatusForbidden, "requested access to the resource is denied"}
	Unsupported         = Code{"UNSUPPORTED", http.StatusMethodNotAllowed, "the operation is unsupported"}
	TooManyRequests     = Code{"TOOMANYREQUESTS", http.StatusTooManyRequests, "too many requests"}
	Unavailable         = Code{"UNAVAILABLE", http.StatusServiceUnavailable, "service unavailable"}
	Unknown             = Code{"UNKNOWN", http.StatusInternalServerError, "unknown error"}
)

// Error is one OCI error: a code, a message that says what failed and what
// to do, optional structured detail, an optional status that overrides the
// code's (the spec answers some conditions, such as an out-of-order chunk,
// with a status of its own), and the cause.
type Error struct {
	Code    Code
	Message string
	Detail  any
	Status  int
	Err     error
	// RetryAfter, when positive, is served as a Retry-After header (whole
	// seconds, rounded up): how long the client should wait before trying
	// again (503 while the cluster elects a leader).
	RetryAfter time.Duration
}

// Errorf returns an Error with code c and a formatted message.
func Errorf(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with code c, message msg and cause err.
func Wrap(c Code, err error, msg string) *Error {
	return &Error{Code: c, Message: msg, Err: err}
}

// WithStatus returns e served with HTTP status s instead of its code's.
func (e *Error) WithStatus(s int) *Error { e.Status = s; return e }

// WithRetryAfter returns e served with a Retry-After of d.
func (e *Error) WithRetryAfter(d time.Duration) *Error { e.RetryAfter = d; return e }

// WithDetail returns e with structured detail d.
func (e *Error) WithDetail(d any) *Error { e.Detail = d; return e }

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = e.Code.Message
	}
	if e.Err != nil {
		return e.Code.Name + ": " + msg + ": " + e.Err.Error()
	}
	return e.Code.Name + ": " + msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether e carries code target.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// HTTPStatus is the status e is served with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	return e.Code.Status
}
