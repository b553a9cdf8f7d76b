package token

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshreg/meshreg/api/auth"
)

// users is an htpasswd file in memory: every listed user's password is
// "pw".
type users map[string]bool

func (u users) Verify(user, pw string) bool { return u[user] && pw == "pw" }
func (u users) Exists(user string) bool     { return u[user] }

// policy grants alice pull and push in team/*, everyone pull in public/*.
var policy = auth.AuthorizerFunc(func(id auth.Identity, repo string, a auth.Action) bool {
	switch {
	case strings.HasPrefix(repo, "public/") && a == auth.Pull:
		return true
	case id.User == "alice" && strings.HasPrefix(repo, "team/"):
		return a == auth.Pull || a == auth.Push
	}
	return false
})

// memKeys holds a key set's bytes, as the replicated state would.
type memKeys struct{ b []byte }

func (m *memKeys) read() ([]byte, error) { return m.b, nil }

func (m *memKeys) set(t testing.TB, s *KeySet) {
	t.Helper()
	b, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m.b = b
}

type fixture struct {
	svc   *Service
	keys  *memKeys
	set   *KeySet
	users users
	now   time.Time
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	f := &fixture{keys: &memKeys{}, users: users{"alice": true, "bob": true}, now: time.Unix(1_800_000_000, 0)}
	set, _, err := Rotate(nil, f.now, DefaultRotation, DefaultTTL+Leeway)
	if err != nil {
		t.Fatal(err)
	}
	f.set = set
	f.keys.set(t, set)
	f.svc, err = New(cfg, NewKeys(f.keys.read), f.users, policy)
	if err != nil {
		t.Fatal(err)
	}
	f.svc.now = func() time.Time { return f.now }
	// The tests change the key set between requests: read it every time.
	var tick time.Time
	f.svc.keys.now = func() time.Time { tick = tick.Add(time.Hour); return tick }
	return f
}

func (f *fixture) issue(t testing.TB, user string, scopes ...string) Issued {
	t.Helper()
	is, err := f.svc.Issue(auth.Identity{User: user}, "", scopes)
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	return is
}

// sign signs claims with key (ES256) and kid.
func sign(t *testing.T, claims jwt.MapClaims, key *ecdsa.PrivateKey, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) claims(iss, aud string) jwt.MapClaims {
	return jwt.MapClaims{"iss": iss, "sub": "alice", "aud": aud, "exp": f.now.Add(time.Minute).Unix(), "nbf": f.now.Unix(),
		"iat": f.now.Unix(), "jti": "x", "access": []Access{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}}}
}

func (f *fixture) currentKey(t *testing.T) (*ecdsa.PrivateKey, string) {
	t.Helper()
	k, err := f.svc.keys.get()
	if err != nil {
		t.Fatal(err)
	}
	return k.current, k.kid
}

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	var te *auth.TokenError
	if !errors.As(err, &te) || te.Reason != reason {
		t.Fatalf("Verify error = %v, want a token error with reason %q", err, reason)
	}
}

func TestIssueIntersectsScopesWithThePolicy(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	is := f.issue(t, "alice", "repository:team/app:pull,push,delete", "repository:other/app:pull", "repository:public/x:pull",
		"repository(plugin):team/plug:pull", "registry:catalog:*", "nonsense", "repository:team/app", "blob:team/app:pull")
	want := []Access{
		{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}},
		{Type: "repository", Name: "public/x", Actions: []string{"pull"}},
		{Type: "repository", Name: "team/plug", Actions: []string{"pull"}},
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
	}
	if got, _ := json.Marshal(is.Access); string(got) != mustJSON(want) {
		t.Errorf("granted %s, want %s", got, mustJSON(want))
	}
	if is.ExpiresIn != DefaultTTL || !is.IssuedAt.Equal(f.now) {
		t.Errorf("lifetime = %s from %s, want %s from %s", is.ExpiresIn, is.IssuedAt, DefaultTTL, f.now)
	}
	// The token is Distribution's format: ES256, kid, the registered claims.
	parts := strings.Split(is.Token, ".")
	var hdr, cl map[string]any
	for i, v := range []*map[string]any{&hdr, &cl} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, v) != nil {
			t.Fatalf("token part %d does not decode: %v", i, err)
		}
	}
	_, kid := f.currentKey(t)
	if hdr["alg"] != "ES256" || hdr["kid"] != kid {
		t.Errorf("header = %v, want alg ES256 and kid %s", hdr, kid)
	}
	for _, k := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"} {
		if _, ok := cl[k]; !ok {
			t.Errorf("claim %s is missing from %v", k, cl)
		}
	}
	if cl["iss"] != OwnIssuer || cl["aud"] != DefaultService || cl["sub"] != "alice" || cl["exp"].(float64) != float64(f.now.Add(DefaultTTL).Unix()) {
		t.Errorf("claims = %v", cl)
	}

	id, err := f.svc.Verify(is.Token)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	scoped := auth.Scoped(policy)
	for _, c := range []struct {
		repo string
		a    auth.Action
		want bool
	}{
		{"team/app", auth.Pull, true}, {"team/app", auth.Push, true}, {"team/app", auth.Delete, false},
		{"team/other", auth.Pull, false}, // the policy allows it, the token does not
		{"other/app", auth.Pull, false}, {"", auth.Admin, false},
	} {
		if got := scoped.Authorize(id, c.repo, c.a); got != c.want {
			t.Errorf("token may %s %s = %v, want %v", c.a, c.repo, got, c.want)
		}
	}
	if id.User != "alice" || !id.Grant.Catalog() {
		t.Errorf("identity = %+v, want alice with the catalog", id)
	}

	// Anonymous: what the policy gives everyone.
	anon := f.issue(t, "", "repository:team/app:pull", "repository:public/x:pull,push")
	if got := mustJSON(anon.Access); got != `[{"type":"repository","name":"public/x","actions":["pull"]}]` {
		t.Errorf("anonymous grant = %s", got)
	}
	if _, err := f.svc.Issue(auth.Identity{User: "alice"}, "someone-else", nil); err == nil {
		t.Error("a token for another service was issued")
	}
	many := make([]string, MaxScopes+1)
	if _, err := f.svc.Issue(auth.Identity{User: "alice"}, "", many); err == nil {
		t.Error("more than MaxScopes scopes were accepted")
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestVerifyRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	key, kid := f.currentKey(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKid, _ := Thumbprint(&other.PublicKey)
	good := f.issue(t, "alice", "repository:team/app:pull").Token

	tooManyAccess := f.claims(OwnIssuer, DefaultService)
	var acc []Access
	for i := range MaxAccessEntries + 1 {
		acc = append(acc, Access{Type: "repository", Name: fmt.Sprint("r", i), Actions: []string{"pull"}})
	}
	tooManyAccess["access"] = acc
	noExp := f.claims(OwnIssuer, DefaultService)
	delete(noExp, "exp")
	removed := f.claims(OwnIssuer, DefaultService)
	removed["sub"] = "mallory"

	for name, c := range map[string]struct {
		token, reason string
	}{
		"unknown key":           {sign(t, f.claims(OwnIssuer, DefaultService), other, otherKid), "unknown_key"},
		"our kid, another key":  {sign(t, f.claims(OwnIssuer, DefaultService), other, kid), "signature"},
		"no kid":                {sign(t, f.claims(OwnIssuer, DefaultService), key, ""), "unknown_key"},
		"wrong audience":        {sign(t, f.claims(OwnIssuer, "another-registry"), key, kid), "audience"},
		"wrong issuer":          {sign(t, f.claims("someone", DefaultService), key, kid), "issuer"},
		"no expiry":             {sign(t, noExp, key, kid), "expired"},
		"user removed":          {sign(t, removed, key, kid), "unknown_user"},
		"oversized":             {good + strings.Repeat("A", MaxTokenBytes), "too_large"},
		"too many access":       {sign(t, tooManyAccess, key, kid), "too_large"},
		"garbage":               {"not.a.token", "malformed"},
		"alg none":              {"eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"meshreg","aud":"meshreg","exp":9999999999}`)) + ".", "signature"},
		"tampered claims":       {tamper(good), "signature"},
		"HS256 with public key": {hs256(t, f.claims(OwnIssuer, DefaultService), kid), "signature"},
	} {
		_, err := f.svc.Verify(c.token)
		var te *auth.TokenError
		if !errors.As(err, &te) {
			t.Errorf("%s: Verify = %v, want a refusal", name, err)
			continue
		}
		if te.Reason != c.reason {
			t.Errorf("%s: reason %q (%v), want %q", name, te.Reason, err, c.reason)
		}
	}
	if _, err := f.svc.Verify(good); err != nil {
		t.Fatalf("the good token was refused: %v", err)
	}
	// A user removed from the htpasswd file after the token was issued.
	delete(f.users, "alice")
	_, err := f.svc.Verify(good)
	wantReason(t, err, "unknown_user")
}

// tamper changes the claims of a token and keeps its signature.
func tamper(tok string) string {
	p := strings.Split(tok, ".")
	b, _ := base64.RawURLEncoding.DecodeString(p[1])
	b = []byte(strings.Replace(string(b), `"pull"`, `"push"`, 1))
	p[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(p, ".")
}

func hs256(t *testing.T, c jwt.MapClaims, kid string) string {
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{TTL: 2 * time.Minute})
	tok := f.issue(t, "alice", "repository:team/app:pull").Token
	f.now = f.now.Add(2*time.Minute + Leeway - time.Second) // within the skew allowed
	if _, err := f.svc.Verify(tok); err != nil {
		t.Fatalf("a token within its lifetime and the skew was refused: %v", err)
	}
	f.now = f.now.Add(2 * time.Second)
	_, err := f.svc.Verify(tok)
	wantReason(t, err, "expired")
	// Not valid yet (a clock far behind the issuer's).
	f.now = f.now.Add(-time.Hour)
	_, err = f.svc.Verify(tok)
	wantReason(t, err, "not_yet_valid")
}

// TestRotation: after the leader rotates, tokens signed by the previous key
// keep verifying until they expire; new tokens use the new key; the old key
// leaves the set once no token it signed can still be valid.
func TestRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	_, oldKid := f.currentKey(t)
	old := f.issue(t, "alice", "repository:team/app:pull").Token

	f.now = f.now.Add(DefaultRotation)
	keep := DefaultTTL + Leeway
	next, changed, err := Rotate(f.set, f.now, DefaultRotation, keep)
	if err != nil || !changed || len(next.Keys) != 2 || next.Keys[1].ID != oldKid {
		t.Fatalf("Rotate = %d keys (changed %v, %v), want a new current key and the old one retired", len(next.Keys), changed, err)
	}
	if again, changed, _ := Rotate(next, f.now, DefaultRotation, keep); changed || len(again.Keys) != 2 {
		t.Errorf("Rotate right after a rotation changed the set")
	}
	f.keys.set(t, next)
	_, newKid := f.currentKey(t)
	if newKid == oldKid {
		t.Fatal("the current key did not change")
	}

	// Issued just before the rotation: still valid with the old key.
	f.now = f.now.Add(-time.Minute)
	recent := f.issue(t, "alice", "repository:team/app:pull").Token
	f.keys.set(t, f.set)
	f.now = f.now.Add(time.Minute)
	f.keys.set(t, next)
	f.issue(t, "alice") // signs with the new key
	if _, err := f.svc.Verify(recent); err != nil {
		t.Fatalf("a token signed by the previous key was refused after the rotation: %v", err)
	}
	_, err = f.svc.Verify(old) // issued a rotation ago: long expired
	wantReason(t, err, "expired")

	// Once it is expired, it is refused; and once keep has passed, the
	// old key leaves the set.
	f.now = f.now.Add(keep)
	_, err = f.svc.Verify(recent)
	wantReason(t, err, "expired")
	pruned, changed, err := Rotate(next, f.now, DefaultRotation, keep)
	if err != nil || !changed || len(pruned.Keys) != 1 || pruned.Keys[0].ID != newKid {
		t.Fatalf("Rotate after keep = %d keys (changed %v): want only the current key", len(pruned.Keys), changed)
	}
	// Never more than MaxKeys.
	s := next
	for i := range 10 {
		s, _, _ = Rotate(s, f.now.Add(time.Duration(i+1)*time.Second), 0, 24*time.Hour)
	}
	if len(s.Keys) > MaxKeys {
		t.Errorf("%d keys after 10 rotations, want at most %d", len(s.Keys), MaxKeys)
	}
}

func TestNoSigningKeyYet(t *testing.T) {
	t.Parallel()
	svc, err := New(Config{}, NewKeys(func() ([]byte, error) { return nil, nil }), users{}, policy)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Issue(auth.Anonymous, "", nil); !errors.Is(err, auth.ErrNoSigningKey) {
		t.Errorf("Issue without keys = %v, want ErrNoSigningKey", err)
	}
	for name, b := range map[string]string{"garbage": "{", "empty set": `{"keys":[]}`, "bad key": `{"keys":[{"kid":"x","private":"AAAA"}]}`} {
		svc.keys = NewKeys(func() ([]byte, error) { return []byte(b), nil })
		if _, err := svc.Issue(auth.Anonymous, "", nil); err == nil {
			t.Errorf("%s: a key set that does not decode signed a token", name)
		}
	}
}

func TestTTLBounds(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{time.Second, MaxTTL + time.Second} {
		if _, err := New(Config{TTL: ttl}, nil, nil, policy); err == nil || !strings.Contains(err.Error(), "--auth-token-ttl") {
			t.Errorf("New with TTL %s = %v, want an error naming the flag", ttl, err)
		}
	}
}

func TestChallenge(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	a := &Authenticator{Service: f.svc}
	r := httptest.NewRequest("GET", "http://node1.example:5000/v2/team/app/manifests/v1", nil)
	want := `Bearer realm="http://node1.example:5000/_meshreg/v1/token",service="meshreg",scope="repository:team/app:pull"`
	if got := a.ChallengeFor(r, "repository:team/app:pull"); got != want {
		t.Errorf("challenge = %s, want %s", got, want)
	}
	r.TLS = &tls.ConnectionState{}
	if got := a.ChallengeFor(r, ""); got != `Bearer realm="https://node1.example:5000/_meshreg/v1/token",service="meshreg"` {
		t.Errorf("TLS challenge = %s", got)
	}
	g := newFixture(t, Config{Realm: "https://auth.example/token", Service: "reg.example"})
	if got := (&Authenticator{Service: g.svc}).ChallengeFor(r, `x"y`); got != `Bearer realm="https://auth.example/token",service="reg.example",scope="x\"y"` {
		t.Errorf("configured realm challenge = %s", got)
	}
	// Bearer and Basic are both taken; Basic without a user file is bad
	// credentials.
	r = httptest.NewRequest("GET", "/v2/", nil)
	r.SetBasicAuth("alice", "pw")
	if _, err := a.Authenticate(r); !errors.Is(err, auth.ErrBadCredentials) {
		t.Errorf("Basic without htpasswd = %v", err)
	}
	a.Basic = &auth.Basic{Users: f.users}
	if id, err := a.Authenticate(r); err != nil || id.User != "alice" || id.Grant != nil {
		t.Errorf("Basic = %+v, %v", id, err)
	}
	r.Header.Set("Authorization", "bearer "+f.issue(t, "bob", "repository:public/a:pull").Token)
	if id, err := a.Authenticate(r); err != nil || id.User != "bob" || id.Grant == nil {
		t.Errorf("Bearer = %+v, %v", id, err)
	}
}

// TestExternalIssuer: Distribution-style settings (issuer, service, root
// certificate bundle). A token signed by the bundle's key, named by kid
// (JWK thumbprint or libtrust id) or carried with an x5c chain, is
// accepted and authorized by its claims alone; another key, another
// issuer, another audience or an expired token are refused.
func TestExternalIssuer(t *testing.T) {
	t.Parallel()
	caKey, caCert, caPEM := selfSigned(t, "external token CA", nil, nil)
	ext, err := ParseExternal("auth.example", caPEM)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, Config{Service: "reg.example", External: ext})
	leafKey, leafCert, _ := selfSigned(t, "token signer", caCert, caKey)

	claims := func(iss, aud string, exp time.Time) jwt.MapClaims {
		return jwt.MapClaims{"iss": iss, "sub": "carol", "aud": aud, "exp": exp.Unix(), "nbf": f.now.Add(-time.Minute).Unix(),
			"iat": f.now.Unix(), "jti": "1", "access": []Access{{Type: "repository", Name: "ext/app", Actions: []string{"pull", "push"}}}}
	}
	ok := claims("auth.example", "reg.example", f.now.Add(time.Minute))
	thumb, _ := Thumbprint(&caKey.PublicKey)
	libtrust, _ := LibtrustKeyID(&caKey.PublicKey)
	x5c := func(c jwt.MapClaims, key *ecdsa.PrivateKey, chain ...*x509.Certificate) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, c)
		var certs []string
		for _, c := range chain {
			certs = append(certs, base64.StdEncoding.EncodeToString(c.Raw))
		}
		tok.Header["x5c"] = certs
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for name, tok := range map[string]string{
		"kid thumbprint": sign(t, ok, caKey, thumb),
		"kid libtrust":   sign(t, ok, caKey, libtrust),
		"x5c chain":      x5c(ok, leafKey, leafCert),
	} {
		id, err := f.svc.Verify(tok)
		if err != nil {
			t.Errorf("%s: external token refused: %v", name, err)
			continue
		}
		// Authorized by its claims alone: the local policy knows no carol.
		if !auth.Scoped(policy).Authorize(id, "ext/app", auth.Push) || auth.Scoped(policy).Authorize(id, "ext/other", auth.Pull) {
			t.Errorf("%s: external token's grant is not its access claim", name)
		}
	}
	otherKey, otherCert, _ := selfSigned(t, "rogue", nil, nil)
	otherThumb, _ := Thumbprint(&otherKey.PublicKey)
	for name, c := range map[string]struct{ tok, reason string }{
		"another key":            {sign(t, ok, otherKey, otherThumb), "unknown_key"},
		"another key, their kid": {sign(t, ok, otherKey, thumb), "signature"},
		"self-signed x5c":        {x5c(ok, otherKey, otherCert), "unknown_key"},
		"wrong issuer":           {sign(t, claims("evil.example", "reg.example", f.now.Add(time.Minute)), caKey, thumb), "issuer"},
		"our issuer name":        {sign(t, claims(OwnIssuer, "reg.example", f.now.Add(time.Minute)), caKey, thumb), "issuer"},
		"wrong audience":         {sign(t, claims("auth.example", "other", f.now.Add(time.Minute)), caKey, thumb), "audience"},
		"expired":                {sign(t, claims("auth.example", "reg.example", f.now.Add(-time.Hour)), caKey, thumb), "expired"},
	} {
		_, err := f.svc.Verify(c.tok)
		var te *auth.TokenError
		if !errors.As(err, &te) || te.Reason != c.reason {
			t.Errorf("%s: Verify = %v, want reason %q", name, err, c.reason)
		}
	}
	if _, err := ParseExternal("x", []byte("no pem here")); err == nil {
		t.Error("a bundle without certificates was accepted")
	}
}

// selfSigned makes an ECDSA certificate, signed by parent (self-signed
// when nil).
func selfSigned(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Unix(1_700_000_000, 0), NotAfter: time.Unix(1_900_000_000, 0),
		IsCA: parent == nil, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return key, cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestVerifiedTokenCache: a token verified once is remembered, but what can
// change is checked on every use: its expiry, its user, and whether its key
// is still in the cluster's set.
func TestVerifiedTokenCache(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	tok := f.issue(t, "alice", "repository:team/app:pull").Token
	if _, err := f.svc.Verify(tok); err != nil {
		t.Fatal(err)
	}
	if len(f.svc.verified) != 1 {
		t.Fatalf("%d tokens remembered, want 1", len(f.svc.verified))
	}
	// The set is replaced by one without the token's key.
	other, _, err := Rotate(nil, f.now, DefaultRotation, DefaultTTL)
	if err != nil {
		t.Fatal(err)
	}
	f.keys.set(t, other)
	_, err = f.svc.Verify(tok)
	wantReason(t, err, "unknown_key")
	f.keys.set(t, f.set)
	if _, err := f.svc.Verify(tok); err != nil {
		t.Fatalf("the key is back, the token was refused: %v", err)
	}
	// A forged token is never served from the cache of a good one.
	_, err = f.svc.Verify(tamper(tok))
	wantReason(t, err, "signature")
}

// TestKeysAreReadAgainAfterAWhile: the key set is read from the state at
// most every keysFresh, and decoded again only when its bytes change.
func TestKeysAreReadAgainAfterAWhile(t *testing.T) {
	t.Parallel()
	set1, _, _ := Rotate(nil, time.Now(), time.Hour, time.Hour)
	set2, _, _ := Rotate(nil, time.Now(), time.Hour, time.Hour)
	b1, _ := set1.Encode()
	b2, _ := set2.Encode()
	cur, reads := b1, 0
	k := NewKeys(func() ([]byte, error) { reads++; return cur, nil })
	now := time.Unix(1_800_000_000, 0)
	k.now = func() time.Time { return now }
	first, err := k.get()
	if err != nil || first.kid != set1.Keys[0].ID {
		t.Fatalf("get = %v, %v", first, err)
	}
	cur = b2
	if got, _ := k.get(); got != first || reads != 1 {
		t.Errorf("read again within keysFresh (%d reads)", reads)
	}
	now = now.Add(keysFresh)
	if got, _ := k.get(); got.kid != set2.Keys[0].ID || reads != 2 {
		t.Errorf("the new set was not read after keysFresh (%d reads)", reads)
	}
}
