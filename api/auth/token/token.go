// Package token is the Docker registry token service: it issues short-lived
// JWTs (Distribution's format, signed ES256 by the cluster's current key)
// for the scopes a user asks and the policy grants, and verifies bearer
// tokens on /v2/: ours (signed by a current or previous cluster key) and,
// optionally, an external issuer's (Distribution's auth.token settings:
// issuer, service, root certificate bundle).
//
// A token of our own is checked again on every request against the
// htpasswd file and the policy as they are now (auth.Scoped), so removing
// a user or narrowing the policy takes effect at once on every node. An
// external issuer's token is authorized by its access claims alone.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshreg/meshreg/api/auth"
)

// Defaults and bounds of the token service.
const (
	// OwnIssuer is the iss of the tokens this cluster signs.
	OwnIssuer = "meshreg"
	// DefaultService is the service (aud) without --auth-token-service.
	DefaultService = "meshreg"
	DefaultTTL     = 5 * time.Minute
	MinTTL         = time.Minute
	MaxTTL         = 24 * time.Hour
	// DefaultRotation is how often the leader makes a new signing key.
	DefaultRotation = 24 * time.Hour
	MaxRotation     = 365 * 24 * time.Hour
	// Leeway is the clock skew allowed between the node that issued a
	// token (or an external issuer) and the one verifying it.
	Leeway = 30 * time.Second
	// MaxTokenBytes bounds a bearer token; MaxAccessEntries its access
	// claims; MaxScopes the scopes one token request may ask.
	MaxTokenBytes    = 8 << 10
	MaxAccessEntries = 64
	MaxScopes        = 32
	maxScopeBytes    = 1 << 10
	maxChainCerts    = 4
)

// Access is one entry of a token's access claim.
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Claims are a token's claims, as Distribution defines them.
type Claims struct {
	jwt.RegisteredClaims
	Access []Access `json:"access"`
}

// Users is the htpasswd file: passwords, and who still exists.
type Users interface {
	auth.Verifier
	Exists(user string) bool
}

// Config configures a Service.
type Config struct {
	// Service is the aud of the tokens issued and accepted; DefaultService
	// if empty.
	Service string
	// Realm, when set, is the challenge's realm (a load balancer's URL, or
	// an external token server's); else the node's own token endpoint on
	// the request's host.
	Realm string
	// TTL is how long an issued token is valid; DefaultTTL if zero.
	TTL time.Duration
	// External, when not nil, accepts an external issuer's tokens.
	External *External
}

// Service issues and verifies tokens. It is safe for concurrent use.
type Service struct {
	cfg   Config
	keys  *Keys
	users Users
	authz auth.Authorizer
	now   func() time.Time

	mu       sync.Mutex
	verified map[[32]byte]*verifiedToken
}

// New returns the token service of a node: keys are the cluster's signing
// keys, users the htpasswd file (nil: only external tokens and anonymous
// ones), authz the policy (not Scoped: what users may do).
func New(cfg Config, keys *Keys, users Users, authz auth.Authorizer) (*Service, error) {
	if cfg.Service == "" {
		cfg.Service = DefaultService
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < MinTTL || cfg.TTL > MaxTTL {
		return nil, fmt.Errorf("token: --auth-token-ttl %s is out of range: use %s to %s", cfg.TTL, MinTTL, MaxTTL)
	}
	return &Service{cfg: cfg, keys: keys, users: users, authz: authz, now: time.Now, verified: map[[32]byte]*verifiedToken{}}, nil
}

// ServiceName is the service (aud) of the tokens.
func (s *Service) ServiceName() string { return s.cfg.Service }

// Login checks a user's password (Basic auth on the token endpoint, or
// the password grant of an OAuth2 POST).
func (s *Service) Login(user, password string) bool {
	return s.users != nil && user != "" && s.users.Verify(user, password)
}

// ErrBadRequest: a token request the client must change (another service,
// too many scopes).
var ErrBadRequest = errors.New("bad token request")

// Issued is a signed token and its lifetime.
type Issued struct {
	Token     string
	IssuedAt  time.Time
	ExpiresIn time.Duration
	Access    []Access
}

// Issue signs a token for id (a user who logged in, or Anonymous) that
// grants the requested scopes as far as the policy grants them now;
// unknown or malformed scopes are dropped. service must be ours ("" is).
// auth.ErrNoSigningKey (wrapped) when the cluster has no key yet.
func (s *Service) Issue(id auth.Identity, service string, scopes []string) (Issued, error) {
	if service != "" && service != s.cfg.Service {
		return Issued{}, fmt.Errorf("token: %w: service %q is not this registry's (%q): use the service of the challenge", ErrBadRequest, truncate(service), s.cfg.Service)
	}
	if len(scopes) > MaxScopes {
		return Issued{}, fmt.Errorf("token: %w: %d scopes in one request: at most %d", ErrBadRequest, len(scopes), MaxScopes)
	}
	keys, err := s.keys.get()
	if err != nil {
		return Issued{}, err
	}
	access := s.grant(id, scopes)
	now := s.now()
	var jti [16]byte
	_, _ = rand.Read(jti[:])
	claims := jwt.MapClaims{
		"iss": OwnIssuer, "sub": id.User, "aud": s.cfg.Service,
		"exp": now.Add(s.cfg.TTL).Unix(), "nbf": now.Unix(), "iat": now.Unix(),
		"jti": hex.EncodeToString(jti[:]), "access": access,
	}
	t := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	t.Header["kid"] = keys.kid
	signed, err := t.SignedString(keys.current)
	if err != nil {
		return Issued{}, fmt.Errorf("token: signing: %w", err)
	}
	return Issued{Token: signed, IssuedAt: now.UTC(), ExpiresIn: s.cfg.TTL, Access: access}, nil
}

// grant intersects the requested scopes with what id may do.
func (s *Service) grant(id auth.Identity, scopes []string) []Access {
	out := []Access{}
	for _, raw := range scopes {
		for _, sc := range strings.Fields(raw) { // the POST form separates scopes by spaces
			a, ok := parseScope(sc)
			if !ok {
				continue
			}
			if a.Type == "registry" {
				out = mergeAccess(out, Access{Type: "registry", Name: "catalog", Actions: []string{"*"}})
				continue
			}
			var allowed []string
			for _, act := range a.Actions {
				if s.authz.Authorize(auth.Identity{User: id.User}, a.Name, auth.Action(act)) {
					allowed = append(allowed, act)
				}
			}
			if len(allowed) > 0 {
				out = mergeAccess(out, Access{Type: "repository", Name: a.Name, Actions: allowed})
			}
			if len(out) >= MaxAccessEntries {
				return out
			}
		}
	}
	return out
}

// mergeAccess adds a to out, merging the actions of an entry for the same
// resource.
func mergeAccess(out []Access, a Access) []Access {
	for i := range out {
		if out[i].Type == a.Type && out[i].Name == a.Name {
			for _, act := range a.Actions {
				if !slices.Contains(out[i].Actions, act) {
					out[i].Actions = append(out[i].Actions, act)
				}
			}
			return out
		}
	}
	return append(out, a)
}

// parseScope reads "repository:NAME:pull,push" (a resource class, as in
// "repository(plugin)", is ignored) or "registry:catalog:*"; anything else
// is not a scope this registry grants.
func parseScope(sc string) (Access, bool) {
	if len(sc) > maxScopeBytes {
		return Access{}, false
	}
	typ, rest, ok := strings.Cut(sc, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i <= 0 {
		return Access{}, false
	}
	name, actions := rest[:i], rest[i+1:]
	if j := strings.IndexByte(typ, '('); j > 0 {
		typ = typ[:j]
	}
	switch {
	case typ == "registry" && name == "catalog":
		return Access{Type: typ, Name: name}, true
	case typ != "repository" || name == "" || len(name) > 255:
		return Access{}, false
	}
	var acts []string
	for _, a := range strings.Split(actions, ",") {
		switch a {
		case "*":
			acts = append(acts, string(auth.Pull), string(auth.Push), string(auth.Delete))
		case string(auth.Pull), string(auth.Push), string(auth.Delete):
			acts = append(acts, a)
		}
	}
	slices.Sort(acts)
	acts = slices.Compact(acts)
	return Access{Type: typ, Name: name, Actions: acts}, len(acts) > 0
}

// Verify checks a bearer token: its size, its signature by a current or
// previous cluster key (or, with External, the external issuer's), its
// issuer, audience and times; for a token of our own, that its user still
// exists. The error is an *auth.TokenError with the reason.
//
// A token whose signature was verified is remembered (by its SHA-256), so
// the next requests with it skip the signature check (~90 µs); its times,
// its key and its user are checked again on every request.
func (s *Service) Verify(raw string) (auth.Identity, error) {
	if len(raw) > MaxTokenBytes {
		return auth.Anonymous, tokenErr("too_large", fmt.Errorf("token is %d bytes, more than %d", len(raw), MaxTokenBytes))
	}
	sum := sha256.Sum256([]byte(raw))
	s.mu.Lock()
	v, hit := s.verified[sum]
	s.mu.Unlock()
	if hit {
		if err := s.stillValid(v); err != nil {
			return auth.Anonymous, err
		}
	} else {
		var err error
		if v, err = s.verify(raw); err != nil {
			return auth.Anonymous, err
		}
		s.mu.Lock()
		if len(s.verified) >= maxVerified {
			clear(s.verified)
		}
		s.verified[sum] = v
		s.mu.Unlock()
	}
	if v.own && v.subject != "" && (s.users == nil || !s.users.Exists(v.subject)) {
		return auth.Anonymous, tokenErr("unknown_user", fmt.Errorf("user %q no longer exists", truncate(v.subject)))
	}
	return auth.Identity{User: v.subject, Grant: v.grant}, nil
}

// maxVerified bounds the remembered verified tokens.
const maxVerified = 10_000

// verifiedToken is what a verified token says.
type verifiedToken struct {
	subject   string
	own       bool
	kid       string
	notBefore time.Time
	expires   time.Time
	grant     *grant
}

// stillValid checks again, for a token verified before, what can change:
// the time, and (ours) whether its key is still in the set.
func (s *Service) stillValid(v *verifiedToken) error {
	now := s.now()
	if !now.Before(v.expires.Add(Leeway)) {
		return tokenErr("expired", fmt.Errorf("token expired at %s", v.expires.UTC().Format(time.RFC3339)))
	}
	if now.Before(v.notBefore.Add(-Leeway)) {
		return tokenErr("not_yet_valid", fmt.Errorf("token is not valid before %s", v.notBefore.UTC().Format(time.RFC3339)))
	}
	if v.own {
		keys, err := s.keys.get()
		if err != nil || keys.public[v.kid] == nil {
			return tokenErr("unknown_key", fmt.Errorf("signed by a key the cluster no longer has (kid %q): log in again", truncate(v.kid)))
		}
	}
	return nil
}

// verify checks a token's signature, issuer, audience and times.
func (s *Service) verify(raw string) (*verifiedToken, error) {
	var (
		own bool
		kid string
	)
	keyfunc := func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		if keys, err := s.keys.get(); err == nil {
			if pub, ok := keys.public[kid]; ok && t.Method == jwt.SigningMethodES256 {
				own = true
				return pub, nil
			}
		}
		if s.cfg.External != nil {
			return s.cfg.External.key(t)
		}
		return nil, fmt.Errorf("signed by a key this cluster does not know (kid %q): log in again", truncate(kid))
	}
	var c Claims
	p := jwt.NewParser(jwt.WithValidMethods(validMethods), jwt.WithLeeway(Leeway), jwt.WithAudience(s.cfg.Service),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.now))
	if _, err := p.ParseWithClaims(raw, &c, keyfunc); err != nil {
		return nil, tokenErr(reason(err), err)
	}
	if len(c.Access) > MaxAccessEntries {
		return nil, tokenErr("too_large", fmt.Errorf("token has %d access entries, more than %d", len(c.Access), MaxAccessEntries))
	}
	if own && c.Issuer != OwnIssuer {
		return nil, tokenErr("issuer", fmt.Errorf("issuer %q is not this cluster's", truncate(c.Issuer)))
	}
	if !own && c.Issuer != s.cfg.External.Issuer {
		return nil, tokenErr("issuer", fmt.Errorf("issuer %q is not the trusted issuer %q (--auth-token-issuer)", truncate(c.Issuer), s.cfg.External.Issuer))
	}
	v := &verifiedToken{subject: c.Subject, own: own, kid: kid, expires: c.ExpiresAt.Time, grant: newGrant(c.Access, !own)}
	if c.NotBefore != nil {
		v.notBefore = c.NotBefore.Time
	}
	return v, nil
}

// validMethods are the signature algorithms accepted (ours is ES256; an
// external issuer may use the others Distribution accepts).
var validMethods = []string{"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

func tokenErr(reason string, err error) error { return &auth.TokenError{Reason: reason, Err: err} }

// reason labels a parse error for metrics.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "unknown_key"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "signature"
	case errors.Is(err, jwt.ErrTokenExpired), errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "not_yet_valid"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "audience"
	}
	return "invalid"
}

// Reasons lists the reason labels Verify gives (for metrics).
var Reasons = []string{"too_large", "malformed", "unknown_key", "signature", "expired", "not_yet_valid", "audience", "issuer", "unknown_user", "invalid"}

// grant is a verified token's access.
type grant struct {
	repos    map[string][]string
	catalog  bool
	external bool
}

func newGrant(access []Access, external bool) *grant {
	g := &grant{repos: map[string][]string{}, external: external}
	for _, a := range access {
		switch {
		case a.Type == "registry" && a.Name == "catalog":
			g.catalog = true
		case a.Type == "repository":
			g.repos[a.Name] = append(g.repos[a.Name], a.Actions...)
		}
	}
	return g
}

func (g *grant) Allows(repo string, a auth.Action) bool {
	acts := g.repos[repo]
	return slices.Contains(acts, string(a)) || slices.Contains(acts, "*")
}
func (g *grant) Catalog() bool  { return g.catalog }
func (g *grant) External() bool { return g.external }

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
