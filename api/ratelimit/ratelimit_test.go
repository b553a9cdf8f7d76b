package ratelimit

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func mustParse(t *testing.T, s string) *Config {
	t.Helper()
	c, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fixed returns a Limiter over c whose clock stands still at the start
// until the test moves it.
func fixed(c *Config) (*Limiter, *time.Time) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := New(func() *Config { return c })
	l.now = func() time.Time { return now }
	return l, &now
}

const sample = `
clients: {requests-per-second: 1, burst: 3}
repositories:
  - {repos: ["ci/**"], requests-per-second: 0.5, burst: 2}
users:
  - {users: [bot], requests-per-second: 10, burst: 10}
`

func TestBurstThenRefusedWithRetryAfter(t *testing.T) {
	t.Parallel()
	l, now := fixed(mustParse(t, sample))
	for i := range 3 {
		if r := l.Allow("10.0.0.1", "", "app"); r != nil {
			t.Fatalf("request %d refused within the burst: %+v", i, r)
		}
	}
	r := l.Allow("10.0.0.1", "", "app")
	if r == nil || r.Limit != LimitClient || r.RetryAfter <= 0 || r.RetryAfter > time.Second {
		t.Fatalf("4th request: %+v, want a client refusal with 0 < retry <= 1s", r)
	}
	if r := l.Allow("10.0.0.2", "", "app"); r != nil {
		t.Fatalf("another client was refused: %+v", r)
	}
	if r := l.Allow("10.0.0.1", "alice", "app"); r != nil {
		t.Fatalf("user alice is her own client, not her address: %+v", r)
	}
	*now = now.Add(time.Second)
	if r := l.Allow("10.0.0.1", "", "app"); r != nil {
		t.Fatalf("after a second a token is back: %+v", r)
	}
}

func TestRepositoryLimitOnlyThatRepository(t *testing.T) {
	t.Parallel()
	l, _ := fixed(mustParse(t, sample))
	// bot's own limit is large; the ci/** repositories allow a burst of 2 each.
	for i := range 2 {
		if r := l.Allow("h", "bot", "ci/app"); r != nil {
			t.Fatalf("request %d refused: %+v", i, r)
		}
	}
	r := l.Allow("h", "bot", "ci/app")
	if r == nil || r.Limit != LimitRepository || r.Subject != "repository ci/app" || r.RetryAfter < time.Second {
		t.Fatalf("3rd request to ci/app: %+v, want the repository limit with ~2s retry", r)
	}
	for i := range 5 {
		if r := l.Allow("h", "bot", "team/app"); r != nil {
			t.Fatalf("team/app request %d refused: %+v", i, r)
		}
	}
	if r := l.Allow("h", "bot", "ci/other"); r != nil {
		t.Fatalf("ci/other has a bucket of its own: %+v", r)
	}
}

func TestRefusalCostsNothing(t *testing.T) {
	t.Parallel()
	c := mustParse(t, `
clients: {requests-per-second: 1, burst: 2}
repositories: [{repos: [hot], requests-per-second: 1, burst: 1}]
`)
	l, _ := fixed(c)
	if r := l.Allow("a", "", "hot"); r != nil {
		t.Fatal(r)
	}
	if r := l.Allow("a", "", "hot"); r == nil || r.Limit != LimitRepository {
		t.Fatalf("got %+v, want the repository limit", r)
	}
	// The refused request took no client token: one is left for another repository.
	if r := l.Allow("a", "", "cold"); r != nil {
		t.Fatalf("the refused request was charged to the client: %+v", r)
	}
}

func TestBucketsBounded(t *testing.T) {
	t.Parallel()
	l, _ := fixed(mustParse(t, sample))
	l.max = 100
	for i := range 10_000 {
		l.Allow(fmt.Sprintf("10.%d.%d.0", i/256, i%256), "", fmt.Sprintf("ci/r%d", i))
	}
	if c, r := l.Buckets(); c != 100 || r != 100 {
		t.Fatalf("buckets after 10000 clients and repositories: %d clients, %d repositories; want 100 each", c, r)
	}
}

func TestNoSectionsLimitsNothing(t *testing.T) {
	t.Parallel()
	l, _ := fixed(mustParse(t, "# nothing\n"))
	for range 1000 {
		if r := l.Allow("a", "", "x"); r != nil {
			t.Fatal(r)
		}
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, in, want string }{
		{"unknown top key", "clients: {requests-per-second: 1, burst: 1}\nclient: {}\n", "line 2: unknown key \"client\""},
		{"zero rate", "\nclients: {requests-per-second: 0, burst: 1}\n", "line 2: requests-per-second 0 is out of range"},
		{"zero burst", "clients:\n  requests-per-second: 5\n", "line 2: burst 0 is out of range"},
		{"bad glob", "repositories:\n  - repos: [\"a/**b\"]\n    requests-per-second: 1\n    burst: 1\n", "line 2: repository glob \"a/**b\""},
		{"no repos", "repositories:\n  - {requests-per-second: 1, burst: 1}\n", "line 2: repositories entry names no repos"},
		{"users key in repos", "repositories:\n  - {users: [a], requests-per-second: 1, burst: 1}\n", "line 2: unknown key \"users\""},
		{"duplicate user", "users:\n  - {users: [a], requests-per-second: 1, burst: 1}\n  - {users: [a], requests-per-second: 2, burst: 1}\n", "line 3: user \"a\" has a limit already"},
		{"reserved user", "users:\n  - {users: [anonymous], requests-per-second: 1, burst: 1}\n", "line 2: \"anonymous\" is not a user"},
		{"not a list", "users: {a: 1}\n", "line 1: users: want a list"},
		{"bad number", "clients: {requests-per-second: fast, burst: 1}\n", "line 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestFloodOfAddressesAtDefaultBound: 4×MaxBuckets distinct IPv6 /64s and
// repositories leave MaxBuckets buckets of each kind.
func TestFloodOfAddressesAtDefaultBound(t *testing.T) {
	t.Parallel()
	l, _ := fixed(mustParse(t, sample))
	for i := range 4 * MaxBuckets {
		l.Allow(fmt.Sprintf("2001:db8:%x:%x::/64", i>>16, i&0xffff), "", fmt.Sprintf("ci/%d", i))
	}
	if c, r := l.Buckets(); c != MaxBuckets || r != MaxBuckets {
		t.Fatalf("buckets: %d clients, %d repositories; want %d each", c, r, MaxBuckets)
	}
}

func TestChangedConfigStartsAfresh(t *testing.T) {
	t.Parallel()
	cur := mustParse(t, "clients: {requests-per-second: 0.001, burst: 1}\n")
	l := New(func() *Config { return cur })
	if r := l.Allow("a", "", ""); r != nil {
		t.Fatal(r)
	}
	if r := l.Allow("a", "", ""); r == nil {
		t.Fatal("2nd request allowed past a burst of 1")
	}
	cur = mustParse(t, "clients: {requests-per-second: 0.001, burst: 2}\n")
	for i := range 2 {
		if r := l.Allow("a", "", ""); r != nil {
			t.Fatalf("request %d under the new limits: %+v", i, r)
		}
	}
}

// TestOpenReloads: a changed file is in effect within about a second; a
// change into something invalid keeps the last good limits and is reported.
func TestOpenReloads(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "limits.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("clients: {requests-per-second: 0.001, burst: 1}\n")
	errs := make(chan error, 10)
	l, err := Open(file, func(err error) {
		if err != nil {
			errs <- err
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	l.Allow("a", "", "")
	if l.Allow("a", "", "") == nil {
		t.Fatal("2nd request allowed past a burst of 1")
	}
	write("clients: {requests-per-second: 0.001, burst: 1}\nbogus: 1\n")
	// Allow polls the file: keep asking until the error is reported.
	deadline := time.Now().Add(5 * time.Second)
	for reported := false; !reported; {
		if r := l.Allow("a", "", ""); r == nil {
			t.Fatal("an invalid file lifted the limits")
		}
		select {
		case err := <-errs:
			if !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), file) {
				t.Fatalf("reload error %v does not name the file and line", err)
			}
			reported = true
		case <-time.After(50 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no reload error within 5s")
			}
		}
	}
	if l.Allow("a", "", "") == nil {
		t.Fatal("an invalid file lifted the limits")
	}
	write("clients: {requests-per-second: 1000, burst: 1000}\n")
	deadline = time.Now().Add(5 * time.Second)
	for l.Allow("a", "", "") != nil {
		if time.Now().After(deadline) {
			t.Fatal("the new limits were not in effect within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func BenchmarkAllow(b *testing.B) {
	c, err := Parse([]byte(sample))
	if err != nil {
		b.Fatal(err)
	}
	l := New(func() *Config { return c })
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		l.Allow(fmt.Sprintf("10.0.%d.%d", (i>>8)&255, i&255), "", "ci/app")
	}
}

func TestBucketMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap")
	}
	l, _ := fixed(mustParse(t, sample))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range MaxBuckets {
		l.Allow(fmt.Sprintf("2001:db8:%x:%x::/64", i>>16, i&0xffff), "", "")
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / MaxBuckets
	t.Logf("%d client buckets: %.0f bytes each, %.1f MiB", MaxBuckets, per, per*MaxBuckets/(1<<20))
	if per > 1024 {
		t.Errorf("a bucket takes %.0f bytes, want under 1 KiB", per)
	}
	runtime.KeepAlive(l)
}
