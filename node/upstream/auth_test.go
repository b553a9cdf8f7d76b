package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestTokenFlowAnonymousCachedPerScope(t *testing.T) {
	f := newFakeRegistry(t)
	ts := newTokenServer(t)
	f.auth = bearerAuth(f, ts)
	want := f.addImage("library/alpine", "3.20", []byte("layer-a"))
	f.addImage("library/busybox", "1", []byte("layer-b"))
	r := newTestRegistry(t, f, nil)
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		got, err := r.Resolve(ctx, "library/alpine", "3.20")
		if err != nil {
			t.Fatalf("Resolve #%d: %v", i, err)
		}
		if got.Digest != want.Digest || got.Size != want.Size || got.MediaType != want.MediaType {
			t.Fatalf("Resolve = %+v, want %+v", got, want)
		}
	}
	if _, err := r.Resolve(ctx, "library/busybox", "1"); err != nil {
		t.Fatal(err)
	}
	if n := ts.fetchCount("repository:library/alpine:pull"); n != 1 {
		t.Errorf("tokens fetched for alpine = %d, want 1 (cached)", n)
	}
	if n := ts.fetchCount("repository:library/busybox:pull"); n != 1 {
		t.Errorf("tokens fetched for busybox = %d, want 1 (one per scope)", n)
	}
	if len(ts.basicSeen) != 0 {
		t.Errorf("anonymous client presented Basic credentials for %v", ts.basicSeen)
	}
	if f.unauth != 2 {
		t.Errorf("401s = %d, want 2 (one per scope, then the cached token is sent up front)", f.unauth)
	}
}

func TestTokenFlowWithCredentials(t *testing.T) {
	f := newFakeRegistry(t)
	ts := newTokenServer(t)
	ts.user, ts.pass = "alice", "s3cret"
	f.auth = bearerAuth(f, ts)
	want := f.addImage("team/app", "v1", []byte("private layer"))
	r := newTestRegistry(t, f, func(c *Config) {
		c.Credentials = staticCreds{"fake.example": {"alice", "s3cret"}}
	})
	desc, body, err := r.Manifest(context.Background(), "team/app", "v1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest != want.Digest || int64(len(body)) != want.Size {
		t.Fatalf("Manifest = %+v, want %+v", desc, want)
	}
	if len(ts.basicSeen) != 1 || ts.basicSeen[0] != "alice" {
		t.Errorf("token endpoint saw Basic users %v, want [alice]", ts.basicSeen)
	}
}

func TestTokenExpiryRefreshesEarly(t *testing.T) {
	f := newFakeRegistry(t)
	ts := newTokenServer(t)
	ts.expiresIn = 300
	f.auth = bearerAuth(f, ts)
	f.addImage("a/b", "t", []byte("x"))
	clock := newFakeClock()
	r := newTestRegistry(t, f, func(c *Config) { c.Now = clock.Now })
	ctx := context.Background()
	scope := "repository:a/b:pull"
	resolve := func() {
		t.Helper()
		if _, err := r.Resolve(ctx, "a/b", "t"); err != nil {
			t.Fatal(err)
		}
	}
	resolve()
	clock.Advance(260 * time.Second) // < 300 - 30 s margin
	resolve()
	if n := ts.fetchCount(scope); n != 1 {
		t.Fatalf("token fetched %d times within its lifetime, want 1", n)
	}
	clock.Advance(15 * time.Second) // 275 s: inside the refresh margin
	resolve()
	if n := ts.fetchCount(scope); n != 2 {
		t.Fatalf("token fetched %d times after 275 s of a 300 s token, want 2 (refreshed early)", n)
	}

	// Without expires_in the default lifetime is 60 s.
	ts.expiresIn = 0
	clock.Advance(time.Hour)
	resolve() // fetch #3, 60 s lifetime
	clock.Advance(50 * time.Second)
	resolve()
	if n := ts.fetchCount(scope); n != 3 {
		t.Fatalf("fetches = %d, want 3 (default 60 s token still fresh at 50 s)", n)
	}
	clock.Advance(9 * time.Second)
	resolve()
	if n := ts.fetchCount(scope); n != 4 {
		t.Fatalf("fetches = %d, want 4 (default 60 s token refreshed at 59 s)", n)
	}
}

func TestTokenFetchSharedByConcurrentRequests(t *testing.T) {
	const n = 16
	f := newFakeRegistry(t)
	ts := newTokenServer(t)
	f.auth = bearerAuth(f, ts)
	f.addImage("shared/repo", "t", []byte("x"))
	// Hold the token answer until every request has been refused once, so
	// they all want a token at the same time.
	ts.delay = func() {
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			f.mu.Lock()
			u := f.unauth
			f.mu.Unlock()
			if u >= n {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r := newTestRegistry(t, f, nil)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.Resolve(context.Background(), "shared/repo", "t")
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := ts.totalFetches(); got != 1 {
		t.Errorf("%d concurrent requests made %d token fetches, want 1", n, got)
	}
}

func TestBasicAuth(t *testing.T) {
	f := newFakeRegistry(t)
	f.auth = basicAuthCheck("bob", "pw")
	want := f.addImage("x/y", "latest", []byte("layer"))
	r := newTestRegistry(t, f, func(c *Config) {
		c.Credentials = staticCreds{"fake.example": {"bob", "pw"}}
	})
	for i := 0; i < 3; i++ {
		got, err := r.Resolve(context.Background(), "x/y", "latest")
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != want.Digest {
			t.Fatalf("digest %s, want %s", got.Digest, want.Digest)
		}
	}
	if f.unauth != 1 {
		t.Errorf("401s = %d, want 1 (Basic sent up front once the upstream asked for it)", f.unauth)
	}
}

func TestWrongOrMissingCredentials(t *testing.T) {
	tests := []struct {
		name    string
		bearer  bool
		creds   Credentials
		wantMsg string
	}{
		{"bearer wrong password", true, staticCreds{"fake.example": {"alice", "wrong"}}, "refused the credentials"},
		{"bearer no credentials", true, nil, "none are configured"},
		{"basic wrong password", false, staticCreds{"fake.example": {"alice", "wrong"}}, "refused the credentials"},
		{"basic no credentials", false, nil, "none are configured"},
		{"credentials for another registry", false, staticCreds{"other.example": {"alice", "s3cret"}}, "none are configured"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			if tc.bearer {
				ts := newTokenServer(t)
				ts.user, ts.pass = "alice", "s3cret"
				f.auth = bearerAuth(f, ts)
			} else {
				f.auth = basicAuthCheck("alice", "s3cret")
			}
			f.addImage("p/q", "v", []byte("l"))
			r := newTestRegistry(t, f, func(c *Config) { c.Credentials = tc.creds })
			_, err := r.Resolve(context.Background(), "p/q", "v")
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			msg := err.Error()
			for _, want := range []string{"fake.example", "--upstream-credentials", tc.wantMsg} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if strings.Contains(msg, "s3cret") || strings.Contains(msg, "wrong") {
				t.Errorf("error %q leaks a password", msg)
			}
			st := r.Status()
			if st.LastError == "" || st.LastErrorAt.IsZero() {
				t.Errorf("Status %+v does not show the error", st)
			}
		})
	}
}

// TestHostileChallenges: whatever the 401 says, the client answers an
// error (never a panic, never a token request to a non-http realm).
func TestHostileChallenges(t *testing.T) {
	long := strings.Repeat("a", 100<<10)
	tests := []struct {
		name   string
		header []string
		want   error
	}{
		{"no challenge", nil, ErrUnauthorized},
		{"empty", []string{""}, ErrUnauthorized},
		{"unknown scheme", []string{`Negotiate abc`}, ErrUnauthorized},
		{"bearer without realm", []string{`Bearer service="x"`}, ErrBadResponse},
		{"file realm", []string{`Bearer realm="file:///etc/passwd"`}, ErrBadResponse},
		{"realm without host", []string{`Bearer realm="/token"`}, ErrBadResponse},
		{"realm with user info", []string{`Bearer realm="http://u:p@127.0.0.1:1/token"`}, ErrBadResponse},
		{"unterminated quote", []string{`Bearer realm="http://127.0.0.1:1/token`}, ErrBadResponse},
		{"trailing backslash", []string{`Bearer realm="\`}, ErrBadResponse},
		{"only commas", []string{`,,,, ,`}, ErrUnauthorized},
		{"equals only", []string{`Bearer =,=,="x"`}, ErrBadResponse},
		{"huge", []string{"Bearer realm=\"" + long + "\""}, ErrBadResponse},
		{"many params", []string{"Bearer " + strings.Repeat(`k="v",`, 5000)}, ErrBadResponse},
		// Go's HTTP client refuses the header itself: a broken upstream.
		{"control chars", []string{"Bearer realm=\"\x00\x01\x7f\""}, ErrUnavailable},
		{"unreachable realm", []string{`Bearer realm="http://127.0.0.1:1/token",scope="repository:p/q:pull"`}, ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			f.auth = func(w http.ResponseWriter, r *http.Request) bool {
				for _, h := range tc.header {
					w.Header().Add("WWW-Authenticate", h)
				}
				w.WriteHeader(http.StatusUnauthorized)
				return false
			}
			r := newTestRegistry(t, f, nil)
			_, err := r.Resolve(context.Background(), "p/q", "v")
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), "fake.example") {
				t.Errorf("error %q does not name the upstream", err)
			}
		})
	}
}

func TestParseChallenges(t *testing.T) {
	h := http.Header{}
	h.Add("WWW-Authenticate", `Basic realm="x", Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push",error="insufficient_scope"`)
	h.Add("WWW-Authenticate", `Bearer realm="https://two.example/t\"q"`)
	got := parseChallenges(h)
	if len(got) != 3 {
		t.Fatalf("parsed %d challenges, want 3: %+v", len(got), got)
	}
	if got[0].Scheme != "basic" || got[0].Params["realm"] != "x" {
		t.Errorf("first = %+v", got[0])
	}
	want := map[string]string{"realm": "https://auth.example/token", "service": "registry.example",
		"scope": "repository:a/b:pull,push", "error": "insufficient_scope"}
	if fmt.Sprint(got[1].Params) != fmt.Sprint(want) || got[1].Scheme != "bearer" {
		t.Errorf("second = %+v, want bearer %v", got[1], want)
	}
	if got[2].Params["realm"] != `https://two.example/t"q` {
		t.Errorf("escaped quote: realm = %q", got[2].Params["realm"])
	}
}

func FuzzParseChallenges(f *testing.F) {
	f.Add(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`)
	f.Add(`Basic realm="x", Bearer realm=y`)
	f.Add(`Bearer realm="\`)
	f.Fuzz(func(t *testing.T, s string) {
		h := http.Header{}
		h.Set("WWW-Authenticate", s)
		for _, c := range parseChallenges(h) {
			if len(c.Params) > maxChallengeParams {
				t.Fatalf("%d params kept", len(c.Params))
			}
		}
	})
}
