package upstream

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestNotFound(t *testing.T) {
	f := newFakeRegistry(t)
	f.addImage("a/b", "t", []byte("x"))
	r := newTestRegistry(t, f, nil)
	ctx := context.Background()
	_, err := r.Resolve(ctx, "a/b", "missing")
	var ue *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &ue) || ue.Status != 404 {
		t.Fatalf("Resolve of a missing tag: %v, want ErrNotFound with status 404", err)
	}
	_, _, err = r.Manifest(ctx, "a/b", "missing", 1<<20)
	if !errors.As(err, &ue) || !errors.Is(err, ErrNotFound) || ue.Code != "MANIFEST_UNKNOWN" {
		t.Fatalf("Manifest of a missing tag: %v, want ErrNotFound MANIFEST_UNKNOWN", err)
	}
	_, err = r.Blob(ctx, "a/b", digest.FromString("nope"), 4, 0)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Blob of a missing digest: %v, want ErrNotFound", err)
	}
	// A 404 is an answer: the upstream is up.
	if st := r.Status(); st.LastSuccess.IsZero() || st.LastError != "" {
		t.Errorf("Status after 404s = %+v, want a success and no error", st)
	}
	// NAME_UNKNOWN with another status still means not found.
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		ociError(w, http.StatusBadRequest, "NAME_UNKNOWN", "repository name not known to registry")
		return true
	}
	if _, _, err := r.Manifest(ctx, "a/c", "t", 1<<20); !errors.Is(err, ErrNotFound) {
		t.Fatalf("NAME_UNKNOWN: %v, want ErrNotFound", err)
	}
}

func TestInvalidNamesNeverSent(t *testing.T) {
	f := newFakeRegistry(t)
	r := newTestRegistry(t, f, nil)
	for _, tc := range []struct{ repo, ref string }{
		{"../etc", "t"}, {"A/b", "t"}, {"a/b", "../../x"}, {"a/b", ""}, {"a//b", "t"},
		{"a/b", "sha256:zz"}, {strings.Repeat("a", 300), "t"}, {"a/b?x=1", "t"},
	} {
		_, err := r.Resolve(context.Background(), tc.repo, tc.ref)
		if !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("Resolve(%q, %q) = %v, want ErrInvalidRequest", tc.repo, tc.ref, err)
		}
	}
	if n := f.hit("HEAD manifests") + f.hit("HEAD "); n != 0 {
		t.Errorf("%d requests reached the upstream", n)
	}
}

func TestServerErrorsAreUnavailable(t *testing.T) {
	f := newFakeRegistry(t)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "boom", http.StatusBadGateway)
		return true
	}
	obs := &countingObserver{}
	r := newTestRegistry(t, f, func(c *Config) { c.Observer = obs })
	_, err := r.Resolve(context.Background(), "a/b", "t")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("502: %v, want ErrUnavailable", err)
	}
	st := r.Status()
	if !strings.Contains(st.LastError, "502") || st.LastErrorAt.IsZero() {
		t.Errorf("Status = %+v, want the 502 as last error", st)
	}
	if obs.responses["resolve 502"] != 1 {
		t.Errorf("observer saw %v, want one resolve 502", obs.responses)
	}

	// A closed port: network error, also unavailable.
	f.srv.Close()
	_, err = r.Resolve(context.Background(), "a/b", "t")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("closed upstream: %v, want ErrUnavailable", err)
	}
	if obs.responses["resolve 0"] != 1 {
		t.Errorf("observer saw %v, want one resolve 0 (network error)", obs.responses)
	}
}

func TestRateLimitBackoff(t *testing.T) {
	clock := newFakeClock()
	tests := []struct {
		name       string
		retryAfter string
		want       time.Duration
	}{
		{"seconds", "120", 120 * time.Second},
		{"http date", clock.Now().Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"missing", "", defaultBackoff},
		{"garbage", "soon", defaultBackoff},
		{"huge", "99999999999", maxBackoff},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			f := newFakeRegistry(t)
			f.addImage("a/b", "t", []byte("x"))
			limited := true
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				f.mu.Lock()
				f.hits["any"]++
				f.mu.Unlock()
				if !limited {
					return false
				}
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				ociError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "pull rate limit")
				return true
			}
			r := newTestRegistry(t, f, func(c *Config) { c.Now = clock.Now })
			ctx := context.Background()
			_, err := r.Resolve(ctx, "a/b", "t")
			var ue *Error
			if !errors.Is(err, ErrUnavailable) || !errors.As(err, &ue) || ue.RetryAfter != tc.want {
				t.Fatalf("429: %v (RetryAfter %v), want ErrUnavailable with RetryAfter %v", err, ue.RetryAfter, tc.want)
			}
			if got := r.Status().BackoffUntil; !got.Equal(clock.Now().Add(tc.want)) {
				t.Errorf("BackoffUntil = %v, want now+%v", got, tc.want)
			}
			// During the backoff: fail fast, nothing sent.
			limited = false
			clock.Advance(tc.want - time.Second)
			_, err = r.Resolve(ctx, "a/b", "t")
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "backing off") {
				t.Fatalf("during backoff: %v, want a fast ErrUnavailable", err)
			}
			if n := f.hit("any"); n != 1 {
				t.Fatalf("upstream saw %d requests, want 1 (the backoff sends nothing)", n)
			}
			clock.Advance(2 * time.Second)
			if _, err := r.Resolve(ctx, "a/b", "t"); err != nil {
				t.Fatalf("after the backoff: %v", err)
			}
		})
	}
}

func TestRateLimitHeaders(t *testing.T) {
	f := newFakeRegistry(t)
	f.addImage("library/nginx", "1.27", []byte("x"))
	remaining := 76
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("ratelimit-limit", "100;w=21600")
		w.Header().Set("ratelimit-remaining", "76;w=21600")
		if remaining != 76 {
			w.Header().Set("ratelimit-remaining", "garbage")
		}
		return false
	}
	r := newTestRegistry(t, f, nil)
	if st := r.Status(); st.RateLimit != 0 || st.RateRemaining != -1 {
		t.Fatalf("initial Status %+v: want limit 0 and remaining -1 (never seen)", st)
	}
	if _, err := r.Resolve(context.Background(), "library/nginx", "1.27"); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.RateLimit != 100 || st.RateRemaining != 76 {
		t.Fatalf("Status %+v: want limit 100, remaining 76", st)
	}
	remaining = 0
	if _, err := r.Resolve(context.Background(), "library/nginx", "1.27"); err != nil {
		t.Fatal(err)
	}
	if st := r.Status(); st.RateRemaining != 76 {
		t.Fatalf("a garbage header changed RateRemaining to %d", st.RateRemaining)
	}
}

func TestRepeatedErrorsLoggedOnce(t *testing.T) {
	f := newFakeRegistry(t)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	}
	logs := &recordingHandler{}
	clock := newFakeClock()
	r := newTestRegistry(t, f, func(c *Config) { c.Logger = slog.New(logs); c.Now = clock.Now })
	for i := 0; i < 50; i++ {
		if _, err := r.Resolve(context.Background(), "a/b", "t"); !errors.Is(err, ErrUnavailable) {
			t.Fatal(err)
		}
	}
	if n := logs.count(slog.LevelWarn); n != 1 {
		t.Fatalf("50 identical failures logged %d times, want 1", n)
	}
	clock.Advance(errorLogEvery)
	r.Resolve(context.Background(), "a/b", "t")
	if n := logs.count(slog.LevelWarn); n != 2 {
		t.Fatalf("after %v: %d WARN lines, want 2", errorLogEvery, n)
	}
	if !strings.Contains(logs.buf.String(), "repeats_not_logged=49") {
		t.Errorf("the second line does not count the 49 repeats:\n%s", logs.buf.String())
	}
}

func TestCanceledByCallerIsNotAnUpstreamError(t *testing.T) {
	f := newFakeRegistry(t)
	release := make(chan struct{})
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		return true
	}
	defer close(release)
	r := newTestRegistry(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := r.Resolve(ctx, "a/b", "t")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if st := r.Status(); st.LastError != "" {
		t.Errorf("a canceled request shows as an upstream error: %q", st.LastError)
	}

	// The request's own timeout is the upstream's fault.
	r.reqTimeout = 50 * time.Millisecond
	if _, err := r.Resolve(context.Background(), "a/b", "t"); !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v, want ErrUnavailable (deadline exceeded)", err)
	}
	if st := r.Status(); !strings.Contains(st.LastError, "no answer in time") {
		t.Errorf("Status.LastError = %q, want the timeout", st.LastError)
	}
}
