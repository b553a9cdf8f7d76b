package manifest

import (
	"errors"
	"fmt"
)

// The kinds of refusal, for errors.Is. The caller maps them to its own
// error codes (node: MANIFEST_INVALID and DIGEST_INVALID).
var (
	// ErrInvalid: the body is not a manifest this registry stores.
	ErrInvalid = errors.New("manifest invalid")
	// ErrDigest: the reference is not a valid digest, or not the body's.
	ErrDigest = errors.New("manifest digest invalid")
)

// Error is why a manifest was refused.
type Error struct {
	// Kind is ErrInvalid or ErrDigest.
	Kind error
	// Msg says what is wrong, written for whoever pushed the manifest.
	Msg string
	// Err is the cause, if any (a JSON or digest syntax error).
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// Unwrap gives the kind and the cause, so errors.Is matches both.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

func invalidf(format string, args ...any) *Error {
	return &Error{Kind: ErrInvalid, Msg: fmt.Sprintf(format, args...)}
}

func invalidWrap(err error, msg string) *Error {
	return &Error{Kind: ErrInvalid, Msg: msg, Err: err}
}

func digestf(format string, args ...any) *Error {
	return &Error{Kind: ErrDigest, Msg: fmt.Sprintf(format, args...)}
}

func digestWrap(err error, msg string) *Error {
	return &Error{Kind: ErrDigest, Msg: msg, Err: err}
}
