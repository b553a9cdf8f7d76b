package upstream

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinels a caller tests with errors.Is on the errors this package returns.
var (
	// ErrNotFound: the upstream answered 404 or MANIFEST_UNKNOWN /
	// BLOB_UNKNOWN / NAME_UNKNOWN.
	ErrNotFound = errors.New("not found upstream")
	// ErrUnauthorized: the upstream refused the request after the token
	// flow (401/403): the credentials for it are wrong or missing.
	ErrUnauthorized = errors.New("upstream refused the credentials")
	// ErrUnavailable: network error, timeout, 5xx, 429, or a backoff after
	// a 429 still in effect. The caller serves what it knew last.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrBadResponse: the upstream answered something this client refuses
	// (digest mismatch, manifest over the size limit, malformed headers).
	ErrBadResponse = errors.New("bad response from upstream")
	// ErrInvalidRequest: the repository or reference asked for is not a
	// valid OCI name; nothing was sent upstream.
	ErrInvalidRequest = errors.New("invalid upstream request")
)

// Error is what every method of Registry returns on failure. Kind (one of
// the sentinels above) and the underlying cause are both reachable with
// errors.Is / errors.As.
type Error struct {
	Upstream   string        // Config.Name
	Op         string        // "resolve", "manifest", "blob", "stat-blob", "token"
	Repo, Ref  string        // what was asked for
	Status     int           // HTTP status; 0 when no response arrived
	Code       string        // OCI error code from the body, if any
	Message    string        // what happened and what to do
	RetryAfter time.Duration // for 429 (and 503 with Retry-After): how long to wait

	kind  error
	cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "upstream %s: %s", e.Upstream, e.Op)
	if e.Repo != "" {
		b.WriteString(" " + e.Repo)
		if e.Ref != "" {
			sep := ":"
			if strings.Contains(e.Ref, ":") {
				sep = "@"
			}
			b.WriteString(sep + e.Ref)
		}
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.cause != nil {
		b.WriteString(": " + e.cause.Error())
	}
	return b.String()
}

// Unwrap exposes the kind sentinel and the cause.
func (e *Error) Unwrap() []error {
	out := make([]error, 0, 2)
	if e.kind != nil {
		out = append(out, e.kind)
	}
	if e.cause != nil {
		out = append(out, e.cause)
	}
	return out
}
