package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
)

// fakeUpstream is an upstream (test only) whose tags point at manifests
// and that fails with err when set; it counts the HEADs it answers.
type fakeUpstream struct {
	mu    sync.Mutex
	tags  map[string]string // repo:tag → manifest body
	err   error
	heads atomic.Int32
	gets  atomic.Int32
	// block, when set, holds every Resolve until closed.
	block chan struct{}
}

func (f *fakeUpstream) Name() string { return "up.test" }

func (f *fakeUpstream) body(repo, ref string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	for k, b := range f.tags {
		r, tag, _ := strings.Cut(k, ":")
		if r == repo && (tag == ref || digest.FromString(b).String() == ref) {
			return b, nil
		}
	}
	return "", fmt.Errorf("%s:%s: %w", repo, ref, ErrNotFound)
}

func (f *fakeUpstream) Resolve(ctx context.Context, repo, ref string) (ocispec.Descriptor, error) {
	f.heads.Add(1)
	if f.block != nil {
		<-f.block
	}
	b, err := f.body(repo, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(b), Size: int64(len(b))}, nil
}

func (f *fakeUpstream) Manifest(ctx context.Context, repo, ref string, max int64) (ocispec.Descriptor, []byte, error) {
	f.gets.Add(1)
	b, err := f.body(repo, ref)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(b), Size: int64(len(b))}, []byte(b), nil
}

func (f *fakeUpstream) Blob(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error) {
	return nil, ErrNotFound
}

func (f *fakeUpstream) set(tag, body string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if body != "" {
		f.tags["team/app:"+tag] = body
	}
	f.err = err
}

// memStore is the replicated state in memory (test only).
type memStore struct {
	mu        sync.Mutex
	tags      map[string]consensus.MirrorTag
	manifests map[string]bool
}

func (s *memStore) MirrorTag(repo, tag string) (consensus.MirrorTag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.tags[repo+":"+tag]
	if !ok {
		return r, consensus.ErrNotFound
	}
	return r, nil
}

func (s *memStore) PutMirrorTag(ctx context.Context, repo, tag string, rec consensus.MirrorTag) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tags[repo+":"+tag] = rec
	return nil
}

func (s *memStore) HasManifest(repo string, d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.manifests[repo+"@"+d.String()]
}

func (s *memStore) StoreManifest(ctx context.Context, repo string, d digest.Digest, mediaType string, body []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.manifests[repo+"@"+d.String()] = true
	return nil
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestMirror(t *testing.T) (*Mirror, *fakeUpstream, *clock) {
	t.Helper()
	up := &fakeUpstream{tags: map[string]string{"team/app:v1": `{"v":1}`}}
	clk := &clock{now: time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)}
	m, err := New(Config{Upstreams: []UpstreamConfig{{Name: "up.test", URL: "http://127.0.0.1:1", Revalidate: time.Minute, Allow: []string{"team/**"}}}},
		Options{Clients: map[string]Upstream{"up.test": up}, Store: &memStore{tags: map[string]consensus.MirrorTag{}, manifests: map[string]bool{}}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return m, up, clk
}

// TestTagStaleness walks one tag through its life: first pull asks the
// upstream, pulls within the interval do not, a pull after it revalidates
// and follows a moved tag, an unreachable upstream is answered with the
// last digest and a Warning, a failure is not retried at once, and a tag
// never seen answers the upstream's error.
func TestTagStaleness(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, up, clk := newTestMirror(t)
	v1 := digest.FromString(`{"v":1}`)

	a, err := m.Tag(ctx, "up.test", "team/app", "v1")
	if err != nil || a.Digest != v1 || a.Result != "miss" || a.Warning != "" || up.heads.Load() != 1 || up.gets.Load() != 1 {
		t.Fatalf("first pull: %+v, %v (heads %d, gets %d)", a, err, up.heads.Load(), up.gets.Load())
	}
	clk.add(59 * time.Second)
	if a, err := m.Tag(ctx, "up.test", "team/app", "v1"); err != nil || a.Result != "hit" || up.heads.Load() != 1 {
		t.Fatalf("within the interval: %+v, %v, heads %d", a, err, up.heads.Load())
	}

	up.set("v1", `{"v":2}`, nil)
	clk.add(2 * time.Second)
	a, err = m.Tag(ctx, "up.test", "team/app", "v1")
	if v2 := digest.FromString(`{"v":2}`); err != nil || a.Digest != v2 || a.Result != "miss" || up.heads.Load() != 2 {
		t.Fatalf("after the interval, a moved tag: %+v, %v, heads %d", a, err, up.heads.Load())
	}

	up.set("", "", fmt.Errorf("dial tcp: connection refused: %w", ErrUnavailable))
	clk.add(2 * time.Minute)
	a, err = m.Tag(ctx, "up.test", "team/app", "v1")
	if err != nil || a.Result != "stale" || !strings.HasPrefix(a.Warning, `110 - "stale: upstream up.test unreachable: `) || strings.Count(a.Warning, `"`) != 2 {
		t.Fatalf("upstream down: %+v, %v", a, err)
	}
	heads := up.heads.Load()
	if a, err := m.Tag(ctx, "up.test", "team/app", "v1"); err != nil || a.Result != "stale" || up.heads.Load() != heads {
		t.Fatalf("a failure is retried at once: %+v, %v, heads %d → %d", a, err, heads, up.heads.Load())
	}
	clk.add(retryFailed)
	if _, err := m.Tag(ctx, "up.test", "team/app", "v1"); err != nil || up.heads.Load() != heads+1 {
		t.Fatalf("a failure is never retried: %v, heads %d", err, up.heads.Load())
	}

	// A tag never seen: 503 while the upstream is down (it may exist), a
	// definite 404 only when the upstream says so.
	_, err = m.Tag(ctx, "up.test", "team/app", "never")
	var oe *oci.Error
	if !errors.As(err, &oe) || oe.HTTPStatus() != 503 || !strings.Contains(oe.Message, "upstream up.test is unavailable") {
		t.Fatalf("never-seen tag with the upstream down: %v", err)
	}
	up.set("", "", nil)
	_, err = m.Tag(ctx, "up.test", "team/app", "nope")
	if !errors.As(err, &oe) || oe.Code != oci.ManifestUnknown || !strings.Contains(oe.Message, "not in upstream up.test") {
		t.Fatalf("unknown tag: %v", err)
	}
	up.set("", "", fmt.Errorf("401: %w", ErrUnauthorized))
	_, err = m.Tag(ctx, "up.test", "team/app", "other")
	if !errors.As(err, &oe) || oe.HTTPStatus() != 502 || !strings.Contains(oe.Message, "--upstream-credentials") {
		t.Fatalf("refused credentials: %v", err)
	}
	// Outside the allow globs: refused before the upstream is asked.
	heads = up.heads.Load()
	if _, err := m.Tag(ctx, "up.test", "other/app", "v1"); !errors.As(err, &oe) || oe.Code != oci.Denied || up.heads.Load() != heads {
		t.Fatalf("repository outside allow: %v", err)
	}
}

// Concurrent pulls of a stale tag share one revalidation.
func TestRevalidationIsShared(t *testing.T) {
	t.Parallel()
	m, up, _ := newTestMirror(t)
	up.block = make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.Tag(context.Background(), "up.test", "team/app", "v1")
			errs <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for up.heads.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the others join the flight
	close(up.block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := up.heads.Load(); n != 1 {
		t.Fatalf("20 concurrent pulls made %d HEADs, want 1", n)
	}
}

func TestParseUpstream(t *testing.T) {
	t.Parallel()
	u, err := ParseUpstream("127.0.0.1:5999=http://127.0.0.1:5999;revalidate=2s;allow=team/**;allow=library/*;region-fetch")
	if err != nil || u.Name != "127.0.0.1:5999" || u.Revalidate != 2*time.Second || len(u.Allow) != 2 || !u.RegionFetch {
		t.Fatalf("ParseUpstream = %+v, %v", u, err)
	}
	if back, err := ParseUpstream(u.String()); err != nil || back.String() != u.String() {
		t.Fatalf("String does not parse back: %q → %+v, %v", u.String(), back, err)
	}
	for in, want := range map[string]string{
		"docker.io":                              "want NAME=URL",
		"Docker.IO=https://x":                    "in lower case",
		"docker.io=ftp://x":                      "must be http(s)",
		"docker.io=https://u:p@x":                "without credentials",
		"docker.io=https://x;revalidate=1ms":     "out of range",
		"docker.io=https://x;revalidate=soon":    "not a duration",
		"docker.io=https://x;allow=a/**b":        "allow=",
		"docker.io=https://x;colour=blue":        "unknown option",
		"docker.io=http://x;ca-file=/etc/ca.pem": "needs an https",
		"evil/path=https://x":                    "registry host",
	} {
		if _, err := ParseUpstream(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseUpstream(%q) = %v, want an error containing %q", in, err, want)
		}
	}
	c := Config{Upstreams: []UpstreamConfig{{Name: "docker.io", URL: "https://a"}, {Name: "docker.io", URL: "https://b"}}, Default: "ghcr.io"}
	err = c.Validate()
	if err == nil || !strings.Contains(err.Error(), "given twice") || !strings.Contains(err.Error(), `--upstream-default "ghcr.io"`) {
		t.Fatalf("Validate = %v", err)
	}
	if d := (Config{Upstreams: []UpstreamConfig{{Name: "docker.io", URL: "https://a"}}}).DefaultUpstream(); d != "docker.io" {
		t.Fatalf("default with docker.io configured = %q", d)
	}
	if d := (Config{Upstreams: []UpstreamConfig{{Name: "ghcr.io", URL: "https://a"}}}).DefaultUpstream(); d != "" {
		t.Fatalf("default without docker.io = %q", d)
	}
}
