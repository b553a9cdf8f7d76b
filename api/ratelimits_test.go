package api_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/htpasswd"
	"github.com/meshreg/meshreg/api/auth/policy"
	"github.com/meshreg/meshreg/api/ratelimit"
)

func rateLimited(t *testing.T, limits string, withAuth bool) *registry {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "rate-limits.yaml")
	if err := os.WriteFile(file, []byte(limits), 0o600); err != nil {
		t.Fatal(err)
	}
	lim, err := ratelimit.Open(file, func(err error) {
		if err != nil {
			t.Errorf("reload: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var guard *auth.Guard
	if withAuth {
		usersFile, policyFile := filepath.Join(dir, "htpasswd"), filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(usersFile, htpasswdLines(t, "alice", "bob", "bot"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(policyFile, []byte("rules: [{users: [authenticated], repos: [\"**\"], allow: [pull, push]}]\n"), 0o600); err != nil {
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
		guard = &auth.Guard{Authn: &auth.Basic{Users: users}, Authz: pol}
	}
	return newRegistry(t, filepath.Join(dir, "data"), func(c *api.Config) {
		c.RateLimits = lim
		c.Auth = guard
	})
}

func expectRetryAfter(t *testing.T, resp *http.Response, body []byte, limit string) {
	t.Helper()
	expect(t, resp, body, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q, want whole seconds >= 1", resp.Header.Get("Retry-After"))
	}
	if !strings.Contains(string(body), limit+" rate limit") || !strings.Contains(string(body), "--rate-limits") {
		t.Fatalf("429 body %s does not name the %s limit and --rate-limits", body, limit)
	}
}

func TestRateLimitAnonymousClient(t *testing.T) {
	t.Parallel()
	// One token every 100 s: the burst is all a test can use.
	r := rateLimited(t, "clients: {requests-per-second: 0.01, burst: 5}\n", false)
	for range 5 {
		resp, body := r.do("GET", "/v2/", nil)
		expect(t, resp, body, 200, "")
	}
	resp, body := r.do("GET", "/v2/app/tags/list", nil)
	expectRetryAfter(t, resp, body, "client")
	if !strings.Contains(string(body), "127.0.0.1") {
		t.Errorf("429 body %s does not name the client", body)
	}
	// Probes and metrics are never limited.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, body := r.do("GET", p, nil)
		expect(t, resp, body, 200, "")
		if p == "/metrics" && !strings.Contains(string(body), `meshreg_rate_limited_total{limit="client"} 1`) {
			t.Errorf("metrics do not count the refusal:\n%s", grepLines(string(body), "rate_limited"))
		}
	}
}

func TestRateLimitPerUserAndRepository(t *testing.T) {
	t.Parallel()
	r := rateLimited(t, `
clients: {requests-per-second: 0.01, burst: 4}
repositories: [{repos: ["ci/**"], requests-per-second: 0.01, burst: 3}]
users: [{users: [bot], requests-per-second: 1000, burst: 1000}]
`, true)
	alice, bob, bot := r.as("alice", "alice-pw"), r.as("bob", "bob-pw"), r.as("bot", "bot-pw")
	for range 4 {
		resp, body := alice.do("GET", "/v2/", nil)
		expect(t, resp, body, 200, "")
	}
	resp, body := alice.do("GET", "/v2/", nil)
	expectRetryAfter(t, resp, body, "client")
	if !strings.Contains(string(body), `user \"alice\"`) {
		t.Errorf("429 body %s does not name the user", body)
	}
	// bob, from the same address, has a bucket of his own.
	resp, body = bob.do("GET", "/v2/", nil)
	expect(t, resp, body, 200, "")

	// Refused requests drain their client's bucket (the anonymous
	// address's), never the repository's.
	for range 3 {
		resp, body = r.do("GET", "/v2/ci/app/tags/list", nil)
		expect(t, resp, body, 401, "UNAUTHORIZED")
	}
	// bot's override lifts its client limit, but ci/app allows 3.
	for range 3 {
		resp, body = bot.do("GET", "/v2/ci/app/tags/list", nil)
		expect(t, resp, body, 404, "NAME_UNKNOWN")
	}
	resp, body = bot.do("GET", "/v2/ci/app/tags/list", nil)
	expectRetryAfter(t, resp, body, "repository")
	if !strings.Contains(string(body), "ci/app") {
		t.Errorf("429 body %s does not name the repository", body)
	}
	// Other repositories are not affected.
	for range 10 {
		resp, body = bot.do("GET", "/v2/team/app/tags/list", nil)
		expect(t, resp, body, 404, "NAME_UNKNOWN")
	}
	// Password guessing from the anonymous address: one try is left,
	// then 429.
	resp, body = r.as("alice", "guess1").do("GET", "/v2/", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	resp, body = r.as("alice", "guess2").do("GET", "/v2/", nil)
	expectRetryAfter(t, resp, body, "client")
	if !strings.Contains(string(body), "client 127.0.0.1") {
		t.Errorf("429 body %s does not name the address", body)
	}
	resp, body = r.do("GET", "/metrics", nil)
	expect(t, resp, body, 200, "")
	for _, want := range []string{`meshreg_rate_limited_total{limit="client"} 2`, `meshreg_rate_limited_total{limit="repository"} 1`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(body), "rate_limited"))
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
