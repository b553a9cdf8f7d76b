package api_test

import (
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/htpasswd"
	"github.com/meshreg/meshreg/api/auth/policy"
	"github.com/meshreg/meshreg/api/auth/token"
	"github.com/meshreg/meshreg/api/ratelimit"
)

// tokenRegistry is a registry with the token service on: htpasswd users
// alice, bob, carol (password <user>-pw), testPolicy, and a key set in
// memory (keys == nil: none yet). limits, when not "", are rate limits.
func tokenRegistry(t *testing.T, keys []byte, limits string, tweaks ...func(*api.Config)) (r *registry, usersFile, policyFile string) {
	t.Helper()
	dir := t.TempDir()
	usersFile, policyFile = filepath.Join(dir, "htpasswd"), filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(usersFile, htpasswdLines(t, "alice", "bob", "carol"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policyFile, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := htpasswd.Open(usersFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Open(policyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := token.New(token.Config{}, token.NewKeys(func() ([]byte, error) { return keys, nil }), users, pol)
	if err != nil {
		t.Fatal(err)
	}
	var lim api.RateLimiter
	if limits != "" {
		file := filepath.Join(dir, "limits.yaml")
		if err := os.WriteFile(file, []byte(limits), 0o600); err != nil {
			t.Fatal(err)
		}
		if lim, err = ratelimit.Open(file, nil); err != nil {
			t.Fatal(err)
		}
	}
	r = newRegistry(t, filepath.Join(dir, "data"), func(c *api.Config) {
		c.Auth = &auth.Guard{Authn: &token.Authenticator{Service: svc, Basic: &auth.Basic{Users: users}}, Authz: auth.Scoped(pol)}
		c.Tokens = svc
		c.RateLimits = lim
		for _, tweak := range tweaks {
			tweak(c)
		}
	})
	return r, usersFile, policyFile
}

func testKeys(t *testing.T) []byte {
	t.Helper()
	set, _, err := token.Rotate(nil, time.Now(), token.DefaultRotation, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := set.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bearer is r seen by a client that sends tok.
func (r *registry) bearer(tok string) *registry {
	c := *r
	c.hdr = []string{"Authorization", "Bearer " + tok}
	return &c
}

// getToken asks the token endpoint with GET, as Docker does.
func getToken(t *testing.T, r *registry, scopes ...string) (*http.Response, []byte, string) {
	t.Helper()
	q := url.Values{"service": {"meshreg"}, "scope": scopes}
	resp, body := r.do("GET", "/_meshreg/v1/token?"+q.Encode(), nil)
	if resp.StatusCode == 200 {
		var raw map[string]any
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatalf("token response %s: %v", body, err)
		}
		for _, k := range []string{"token", "access_token", "expires_in", "issued_at"} {
			if _, ok := raw[k]; !ok {
				t.Fatalf("token response %s has no %s", body, k)
			}
		}
		if raw["token"] != raw["access_token"] || raw["expires_in"].(float64) != 300 {
			t.Fatalf("token response %s: token and access_token differ or expires_in is not 300", body)
		}
		if _, err := time.Parse(time.RFC3339, raw["issued_at"].(string)); err != nil {
			t.Fatalf("issued_at: %v", err)
		}
		return resp, body, raw["token"].(string)
	}
	return resp, body, ""
}

func TestBearerChallenge(t *testing.T) {
	t.Parallel()
	r, _, _ := tokenRegistry(t, testKeys(t), "")
	host := strings.TrimPrefix(r.url, "http://")
	realm := `Bearer realm="http://` + host + `/_meshreg/v1/token",service="meshreg"`
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/v2/", realm},
		{"GET", "/v2/team/app/manifests/v1", realm + `,scope="repository:team/app:pull"`},
		{"HEAD", "/v2/team/app/blobs/sha256:" + strings.Repeat("a", 64), realm + `,scope="repository:team/app:pull"`},
		{"POST", "/v2/team/app/blobs/uploads/", realm + `,scope="repository:team/app:pull,push"`},
		{"DELETE", "/v2/team/app/manifests/sha256:" + strings.Repeat("a", 64), realm + `,scope="repository:team/app:delete"`},
		{"GET", "/v2/_catalog", ""}, // listed (empty) for anonymous: filtered, not refused
	} {
		resp, body := r.do(c.method, c.path, nil)
		if c.want == "" {
			continue
		}
		if resp.StatusCode != 401 {
			t.Errorf("%s %s: status %d, want 401; %s", c.method, c.path, resp.StatusCode, body)
			continue
		}
		if got := resp.Header.Get("WWW-Authenticate"); got != c.want {
			t.Errorf("%s %s: WWW-Authenticate\n  %s\nwant\n  %s", c.method, c.path, got, c.want)
		}
	}
	// A Bearer token without the catalog scope: challenged for it.
	_, _, tok := getToken(t, r.as("alice", "alice-pw"), "repository:team/app:pull")
	resp, body := r.bearer(tok).do("GET", "/v2/_catalog", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	if got := resp.Header.Get("WWW-Authenticate"); !strings.HasSuffix(got, `scope="registry:catalog:*"`) {
		t.Errorf("catalog challenge %s does not ask for registry:catalog:*", got)
	}
}

// TestTokenFlow: docker's flow (GET with Basic), containerd's (POST form),
// and what the token then allows: its scope, within the policy as it is
// now.
func TestTokenFlow(t *testing.T) {
	t.Parallel()
	r, usersFile, policyFile := tokenRegistry(t, testKeys(t), "")
	alice := r.as("alice", "alice-pw")

	resp, body, tok := getToken(t, alice, "repository:team/app:pull,push")
	expect(t, resp, body, 200, "")
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("token response Cache-Control %q, want no-store", resp.Header.Get("Cache-Control"))
	}
	a := r.bearer(tok)
	resp, body = a.do("GET", "/v2/", nil)
	expect(t, resp, body, 200, "")
	resp, body = a.pushManifest("team/app", "v1", "application/vnd.oci.image.manifest.v1+json", a.image("team/app", "x"))
	expect(t, resp, body, 201, "")
	resp, body = a.do("GET", "/v2/team/app/manifests/v1", nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
	expect(t, resp, body, 200, "")
	// Outside the token's scope (the policy would allow it): 401, so the
	// client asks for a token with that scope.
	resp, body = a.do("GET", "/v2/team/other/tags/list", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	if !strings.Contains(resp.Header.Get("WWW-Authenticate"), `scope="repository:team/other:pull"`) {
		t.Errorf("challenge %q does not name the scope needed", resp.Header.Get("WWW-Authenticate"))
	}
	// Basic credentials still work directly.
	resp, body = alice.do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 200, "")

	// bob may only pull team/: his token says so, whatever he asks.
	_, _, bobTok := getToken(t, r.as("bob", "bob-pw"), "repository:team/app:pull,push,delete")
	b := r.bearer(bobTok)
	resp, body = b.do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 200, "")
	resp, body = b.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 403, "DENIED") // a new token would not help: the policy says no

	// containerd: POST form, grant_type=password, scopes space-separated.
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-pw"}, "service": {"meshreg"},
		"client_id": {"containerd-client"}, "scope": {"repository:team/app:pull repository:secret/x:pull"}}
	resp, body = r.do("POST", "/_meshreg/v1/token", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	expect(t, resp, body, 200, "")
	var tr struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		t.Fatalf("POST token response %s: %v", body, err)
	}
	resp, body = r.bearer(tr.AccessToken).do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 200, "")
	if got := tokenAccess(t, tr.AccessToken); got != `[{"type":"repository","name":"team/app","actions":["pull"]},{"type":"repository","name":"secret/x","actions":["pull"]}]` {
		t.Errorf("POST token access %s", got)
	}
	form.Set("grant_type", "refresh_token")
	resp, body = r.do("POST", "/_meshreg/v1/token", []byte(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
	expect(t, resp, body, 400, "UNSUPPORTED")
	if !strings.Contains(string(body), "refresh_token") {
		t.Errorf("refresh_token refusal %s does not say why", body)
	}

	// Anonymous: a token for what anonymous clients may do.
	resp, body, anonTok := getToken(t, r, "repository:public/base:pull", "repository:team/app:pull")
	expect(t, resp, body, 200, "")
	if got := tokenAccess(t, anonTok); got != `[{"type":"repository","name":"public/base","actions":["pull"]}]` {
		t.Errorf("anonymous token access %s", got)
	}

	// The policy changes: alice's token stops granting push at once.
	if err := os.WriteFile(policyFile, []byte("rules: [{users: [alice], repos: [\"team/**\"], allow: [pull]}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	touchLater(t, policyFile)
	waitStatus(t, func() int {
		resp, _ := a.do("POST", "/v2/team/app/blobs/uploads/", nil)
		return resp.StatusCode
	}, 403)
	// alice is removed from the htpasswd file: her token stops working.
	if err := os.WriteFile(usersFile, htpasswdLines(t, "bob", "carol"), 0o600); err != nil {
		t.Fatal(err)
	}
	touchLater(t, usersFile)
	waitStatus(t, func() int {
		resp, _ := a.do("GET", "/v2/team/app/tags/list", nil)
		return resp.StatusCode
	}, 401)
}

// touchLater moves a file's mtime ahead, so a rewrite within the same
// second of the same size is seen as a change.
func touchLater(t *testing.T, path string) {
	t.Helper()
	later := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}

// waitStatus polls until status() is want, for at most 5 s.
func waitStatus(t *testing.T, status func() int, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	got := 0
	for time.Now().Before(deadline) {
		if got = status(); got == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("status %d after 5 s, want %d", got, want)
}

// tokenAccess is the access claim of a token, as JSON.
func tokenAccess(t *testing.T, tok string) string {
	t.Helper()
	b, _ := json.Marshal(tokenClaims(t, tok)["access"])
	var a []token.Access
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(a)
	return string(out)
}

func tokenClaims(t *testing.T, tok string) map[string]any {
	t.Helper()
	p := strings.Split(tok, ".")
	if len(p) != 3 {
		t.Fatalf("token %q is not a JWS", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(p[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTokenBadCredentials(t *testing.T) {
	t.Parallel()
	// One request every 100 s per client: the burst is all a test can use.
	r, _, _ := tokenRegistry(t, testKeys(t), "clients: {requests-per-second: 0.01, burst: 3}\n")
	for i := range 3 {
		resp, body, _ := getToken(t, r.as("alice", "wrong"), "repository:team/app:pull")
		expect(t, resp, body, 401, "UNAUTHORIZED")
		if !strings.Contains(string(body), "wrong user name or password") {
			t.Errorf("attempt %d: body %s does not say what is wrong", i, body)
		}
	}
	// The failures were charged to the client: the next attempt, even
	// with the right password, waits.
	resp, body, _ := getToken(t, r.as("alice", "alice-pw"), "repository:team/app:pull")
	expect(t, resp, body, 429, "TOOMANYREQUESTS")
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	// A refused bearer token on /v2/ is 401 with a clear message.
	r2, _, _ := tokenRegistry(t, testKeys(t), "")
	resp, body = r2.bearer("e30.e30.e30").do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	if !strings.Contains(string(body), "invalid bearer token") {
		t.Errorf("bad token body %s", body)
	}
	// A token from another cluster (another key) is refused.
	r3, _, _ := tokenRegistry(t, testKeys(t), "")
	_, _, foreign := getToken(t, r3.as("alice", "alice-pw"), "repository:team/app:pull")
	resp, body = r2.bearer(foreign).do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	if !strings.Contains(string(body), "unknown_key") {
		t.Errorf("foreign token body %s does not give the reason", body)
	}
}

func TestTokenEndpointWithoutKeyIsUnavailable(t *testing.T) {
	t.Parallel()
	r, _, _ := tokenRegistry(t, nil, "")
	resp, body, _ := getToken(t, r.as("alice", "alice-pw"), "repository:team/app:pull")
	expect(t, resp, body, 503, "UNAVAILABLE")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

// TestTokenLoginFailureIsAudited: a wrong password at the token endpoint
// is one audit line naming the user claimed and the client; a token issued
// is none (it changes nothing).
func TestTokenLoginFailureIsAudited(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	usersFile := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(usersFile, htpasswdLines(t, "alice"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := htpasswd.Open(usersFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	keys := testKeys(t)
	svc, err := token.New(token.Config{}, token.NewKeys(func() ([]byte, error) { return keys, nil }), users, auth.AuthenticatedOnly)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := api.DefaultConfig()
	cfg.Auth = &auth.Guard{Authn: &token.Authenticator{Service: svc, Basic: &auth.Basic{Users: users}}, Authz: auth.Scoped(auth.AuthenticatedOnly)}
	cfg.Tokens = svc
	h, err := api.New(cfg, nil, nil, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	r := &registry{t: t, url: srv.URL}

	resp, body, _ := getToken(t, r.as("alice", "guess"), "repository:a:pull")
	expect(t, resp, body, 401, "UNAUTHORIZED")
	expectLines(t, "wrong password", auditLines(t, logs), map[string]any{
		"msg": "login denied", "audit": true, "claimed_user": "alice", "endpoint": "token", "client": "127.0.0.1", "result": "denied"})
	resp, body, _ = getToken(t, r.as("alice", "alice-pw"), "repository:a:pull")
	expect(t, resp, body, 200, "")
	expectLines(t, "token issued", auditLines(t, logs))
}

func TestTokenRequestErrors(t *testing.T) {
	t.Parallel()
	r, _, _ := tokenRegistry(t, testKeys(t), "")
	alice := r.as("alice", "alice-pw")
	for name, c := range map[string]struct {
		method, query, form string
		status              int
	}{
		"another service":  {"GET", "service=elsewhere&scope=repository:a:pull", "", 400},
		"too many scopes":  {"GET", "service=meshreg" + strings.Repeat("&scope=repository:a:pull", 33), "", 400},
		"huge query":       {"GET", "scope=" + strings.Repeat("a", 70<<10), "", 400},
		"no grant type":    {"POST", "", "username=alice&password=alice-pw", 400},
		"client grant":     {"POST", "", "grant_type=client_credentials", 400},
		"huge form":        {"POST", "", "grant_type=password&scope=" + strings.Repeat("a", 70<<10), 400},
		"wrong form creds": {"POST", "", "grant_type=password&username=alice&password=x", 401},
	} {
		var body []byte
		hdr := []string{}
		if c.form != "" {
			body, hdr = []byte(c.form), []string{"Content-Type", "application/x-www-form-urlencoded"}
		}
		client := alice
		if c.method == "POST" {
			client = r
		}
		resp, b := client.do(c.method, "/_meshreg/v1/token?"+c.query, body, hdr...)
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d; %s", name, resp.StatusCode, c.status, b)
			continue
		}
		var e struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		if err := json.Unmarshal(b, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Message == "" {
			t.Errorf("%s: body %s is not an error with a message", name, b)
		}
	}
	// A Bearer token is not a login at the token endpoint.
	_, _, tok := getToken(t, alice, "repository:team/app:pull")
	resp, body := r.bearer(tok).do("GET", "/_meshreg/v1/token?service=meshreg", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
}
