// Package auth decides who a client is (an Authenticator) and what it may
// do (an Authorizer). The api package calls both once per request, in its
// dispatcher; it never looks at credentials itself.
//
// Seam: Basic (htpasswd users) is one Authenticator; the bearer token
// service (package token: tokens valid on every node) is another, which
// accepts Basic too and challenges with Bearer. A token's grant rides on
// the Identity, and Scoped makes the Authorizer honour it.
package auth

import (
	"errors"
	"net/http"
)

// Action is what a request does to a repository (or, Admin, to the cluster).
type Action string

// The actions a policy can grant.
const (
	Pull   Action = "pull"
	Push   Action = "push"
	Delete Action = "delete"
	// Admin is the right to call the cluster's admin endpoints
	// (/_meshreg/v1/ routes that change the cluster); it has no repository.
	Admin Action = "admin"
)

// Actions lists every Action, in the order a policy documents them.
var Actions = []Action{Pull, Push, Delete, Admin}

// Identity is who a request comes from. The zero Identity is anonymous.
type Identity struct {
	// User is the authenticated user name; empty for anonymous.
	User string
	// Grant is what the bearer token the request came with grants; nil
	// for Basic auth and anonymous requests. See Scoped.
	Grant Grant
}

// Grant is the access a verified bearer token carries. Implementations
// are pointers (an Identity stays comparable).
type Grant interface {
	// Allows reports whether the token grants a on repo.
	Allows(repo string, a Action) bool
	// Catalog reports whether the token grants the catalog listing.
	Catalog() bool
	// External reports whether an external issuer signed the token: it is
	// the authority, and the token's grant is all that is checked. A token
	// of our own is checked against the current policy too.
	External() bool
}

// Scoped makes base honour tokens: an identity with a Grant may do only
// what the token grants, and, for a token of our own, what base still
// grants now (a policy change takes effect at once). Tokens never carry the
// admin right.
func Scoped(base Authorizer) Authorizer {
	return AuthorizerFunc(func(id Identity, repo string, a Action) bool {
		if id.Grant == nil {
			return base.Authorize(id, repo, a)
		}
		if a == Admin || !id.Grant.Allows(repo, a) {
			return false
		}
		return id.Grant.External() || base.Authorize(Identity{User: id.User}, repo, a)
	})
}

// ScopedChallenger is an Authenticator whose challenge depends on the
// request: the Bearer challenge names the token service on the request's
// host and the scope the refused request needs ("" when none, e.g.
// "repository:team/app:pull,push"). The api package prefers it over
// Challenge.
type ScopedChallenger interface {
	ChallengeFor(r *http.Request, scope string) string
}

// TokenError is a bearer token that was refused; Reason is a short, fixed
// label for metrics (expired, signature, audience, ...).
type TokenError struct {
	Reason string
	Err    error
}

func (e *TokenError) Error() string {
	return "invalid bearer token (" + e.Reason + "): " + e.Err.Error()
}
func (e *TokenError) Unwrap() error { return e.Err }

// ErrNoSigningKey: the token service has no signing key yet (a fresh
// cluster before its leader wrote one); retry shortly.
var ErrNoSigningKey = errors.New("auth: no token signing key yet")

// Anonymous is the identity of a request without credentials.
var Anonymous = Identity{}

// IsAnonymous reports whether id carries no authenticated user.
func (id Identity) IsAnonymous() bool { return id.User == "" }

func (id Identity) String() string {
	if id.IsAnonymous() {
		return "anonymous"
	}
	return id.User
}

// ErrBadCredentials is returned by an Authenticator when the request
// carries credentials that are wrong (unknown user, bad password, malformed
// header). A request without credentials is Anonymous, not an error.
var ErrBadCredentials = errors.New("auth: bad credentials")

// Authenticator tells who a request comes from.
// It is called concurrently.
type Authenticator interface {
	Authenticate(r *http.Request) (Identity, error)
	// Challenge is the WWW-Authenticate value sent with a 401.
	Challenge() string
}

// Authorizer decides whether id may do a on repo (repo is "" for Admin).
// It is called concurrently and must not block on I/O for long.
type Authorizer interface {
	Authorize(id Identity, repo string, a Action) bool
}

// AuthorizerFunc adapts a function to Authorizer.
type AuthorizerFunc func(id Identity, repo string, a Action) bool

// Authorize calls f.
func (f AuthorizerFunc) Authorize(id Identity, repo string, a Action) bool { return f(id, repo, a) }

// AuthenticatedOnly lets every authenticated user do everything and
// anonymous nothing: the rule when users are configured without a policy.
var AuthenticatedOnly Authorizer = AuthorizerFunc(func(id Identity, _ string, _ Action) bool {
	return !id.IsAnonymous()
})

// Guard is the pair the api package calls: nil means authentication is off.
type Guard struct {
	Authn Authenticator
	Authz Authorizer
}

// Verifier checks a user's password (an htpasswd file is one).
type Verifier interface {
	Verify(user, password string) bool
}

// Basic authenticates with HTTP Basic auth against a Verifier.
type Basic struct {
	Users Verifier
	// Realm names the registry in the challenge; "meshreg" if empty.
	Realm string
}

var _ Authenticator = (*Basic)(nil)

// Authenticate returns the user of a valid Authorization: Basic header,
// Anonymous without one, and ErrBadCredentials otherwise.
func (b *Basic) Authenticate(r *http.Request) (Identity, error) {
	if r.Header.Get("Authorization") == "" {
		return Anonymous, nil
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" || !b.Users.Verify(user, pass) {
		return Anonymous, ErrBadCredentials
	}
	return Identity{User: user}, nil
}

// Challenge is `Basic realm="meshreg"`.
func (b *Basic) Challenge() string {
	realm := b.Realm
	if realm == "" {
		realm = "meshreg"
	}
	return `Basic realm="` + realm + `"`
}
