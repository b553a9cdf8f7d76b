package token

import (
	"net/http"
	"strings"

	"github.com/meshreg/meshreg/api/auth"
)

// Authenticator takes bearer tokens (verified by the Service) and Basic
// credentials (Basic, nil when there is no htpasswd file), and challenges
// with Bearer, pointing clients at the token service.
type Authenticator struct {
	Service *Service
	Basic   *auth.Basic
}

var (
	_ auth.Authenticator    = (*Authenticator)(nil)
	_ auth.ScopedChallenger = (*Authenticator)(nil)
)

// TokenPath is the node's token endpoint.
const TokenPath = "/_meshreg/v1/token"

// Authenticate returns the identity of a bearer token or Basic
// credentials, Anonymous without credentials.
func (a *Authenticator) Authenticate(r *http.Request) (auth.Identity, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return auth.Anonymous, nil
	}
	if scheme, tok, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return a.Service.Verify(strings.TrimSpace(tok))
	}
	if a.Basic == nil {
		return auth.Anonymous, auth.ErrBadCredentials
	}
	return a.Basic.Authenticate(r)
}

// Challenge is the Bearer challenge without a request (realm as
// configured, else the token endpoint's path).
func (a *Authenticator) Challenge() string { return a.ChallengeFor(nil, "") }

// ChallengeFor is `Bearer realm="<scheme>://<host>/_meshreg/v1/token",
// service="<service>",scope="<scope>"`; the realm is --auth-token-realm
// when set.
func (a *Authenticator) ChallengeFor(r *http.Request, scope string) string {
	realm := a.Service.cfg.Realm
	if realm == "" {
		realm = TokenPath
		if r != nil && r.Host != "" {
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			realm = scheme + "://" + r.Host + TokenPath
		}
	}
	c := `Bearer realm=` + quote(realm) + `,service=` + quote(a.Service.cfg.Service)
	if scope != "" {
		c += `,scope=` + quote(scope)
	}
	return c
}

// quote makes s a quoted-string (RFC 9110), dropping what cannot be in one.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(s) {
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
