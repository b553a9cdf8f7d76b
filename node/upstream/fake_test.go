package upstream

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet/tlog"
)

// fakeRegistry is a test-only upstream: manifests and blobs in memory, with
// optional Bearer (token server) or Basic auth and per-test hooks.
type fakeRegistry struct {
	t   *testing.T
	srv *httptest.Server

	mu        sync.Mutex
	manifests map[string]fakeManifest // "repo:ref" (tag or digest)
	blobs     map[digest.Digest][]byte
	hits      map[string]int // "METHOD kind" → count
	unauth    int            // 401s answered
	ranges    []string       // Range headers seen on blob GETs

	// auth decides whether r may proceed; when it returns false it has
	// written the answer (401 with a challenge). nil = open.
	auth func(w http.ResponseWriter, r *http.Request) bool
	// hook runs first; true means it answered.
	hook func(w http.ResponseWriter, r *http.Request) bool
}

type fakeManifest struct {
	mediaType string
	body      []byte
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	f := &fakeRegistry{t: t, manifests: map[string]fakeManifest{}, blobs: map[digest.Digest][]byte{}, hits: map[string]int{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeRegistry) hit(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[key]
}

// addImage stores a one-layer image under repo:tag and returns the
// manifest's descriptor.
func (f *fakeRegistry) addImage(repo, tag string, layer []byte) ocispec.Descriptor {
	f.mu.Lock()
	defer f.mu.Unlock()
	ld := digest.FromBytes(layer)
	f.blobs[ld] = layer
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	f.blobs[digest.FromBytes(cfg)] = cfg
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: ld, Size: int64(len(layer))}},
	}
	m.SchemaVersion = 2
	body, _ := json.Marshal(m)
	d := digest.FromBytes(body)
	fm := fakeManifest{mediaType: ocispec.MediaTypeImageManifest, body: body}
	f.manifests[repo+":"+tag] = fm
	f.manifests[repo+":"+d.String()] = fm
	return ocispec.Descriptor{MediaType: fm.mediaType, Digest: d, Size: int64(len(body))}
}

func (f *fakeRegistry) serve(w http.ResponseWriter, r *http.Request) {
	if f.hook != nil && f.hook(w, r) {
		return
	}
	if f.auth != nil && !f.auth(w, r) {
		f.mu.Lock()
		f.unauth++
		f.mu.Unlock()
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	var repo, kind, ref string
	for _, k := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(rest, k); i > 0 {
			repo, kind, ref = rest[:i], strings.Trim(k, "/"), rest[i+len(k):]
			break
		}
	}
	f.mu.Lock()
	f.hits[r.Method+" "+kind]++
	if kind == "blobs" && r.Header.Get("Range") != "" {
		f.ranges = append(f.ranges, r.Header.Get("Range"))
	}
	m, mok := f.manifests[repo+":"+ref]
	b, bok := f.blobs[digest.Digest(ref)]
	f.mu.Unlock()
	switch {
	case kind == "manifests" && mok:
		w.Header().Set("Content-Type", m.mediaType)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.body).String())
		w.Header().Set("Content-Length", strconv.Itoa(len(m.body)))
		if r.Method == http.MethodGet {
			w.Write(m.body)
		}
	case kind == "blobs" && bok:
		w.Header().Set("Docker-Content-Digest", ref)
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(b)))
	case kind == "manifests":
		ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
	default:
		ociError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown")
	}
}

func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, msg)
}

// tokenServer is a test-only token endpoint (the realm). It issues
// "tok-N" for any scope, to anyone or only to user:pass.
type tokenServer struct {
	srv *httptest.Server

	mu        sync.Mutex
	issued    map[string]string // token → scope
	fetches   map[string]int    // scope → count
	basicSeen []string          // user names presented
	expiresIn int               // 0 = omit
	user      string            // "" = anonymous allowed
	pass      string
	delay     func() // runs before answering (to hold concurrent fetches)
}

func newTokenServer(t *testing.T) *tokenServer {
	ts := &tokenServer{issued: map[string]string{}, fetches: map[string]int{}}
	ts.srv = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.srv.Close)
	return ts
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	if ts.delay != nil {
		ts.delay()
	}
	scope := r.URL.Query().Get("scope")
	u, p, hasBasic := r.BasicAuth()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if hasBasic {
		ts.basicSeen = append(ts.basicSeen, u)
	}
	if ts.user != "" && (!hasBasic || u != ts.user || p != ts.pass) {
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	ts.fetches[scope]++
	tok := fmt.Sprintf("tok-%d", len(ts.issued)+1)
	ts.issued[tok] = scope
	body := map[string]any{"token": tok}
	if ts.expiresIn > 0 {
		body["expires_in"] = ts.expiresIn
	}
	json.NewEncoder(w).Encode(body)
}

func (ts *tokenServer) fetchCount(scope string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.fetches[scope]
}

func (ts *tokenServer) totalFetches() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for _, c := range ts.fetches {
		n += c
	}
	return n
}

// bearerAuth makes f demand a token that ts issued for the request's repository.
func bearerAuth(f *fakeRegistry, ts *tokenServer) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		rest := strings.TrimPrefix(r.URL.Path, "/v2/")
		repo := rest
		for _, k := range []string{"/manifests/", "/blobs/"} {
			if i := strings.LastIndex(rest, k); i > 0 {
				repo = rest[:i]
			}
		}
		scope := "repository:" + repo + ":pull"
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		ts.mu.Lock()
		granted := ok && ts.issued[tok] == scope
		ts.mu.Unlock()
		if granted {
			return true
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake-registry",scope="%s"`, ts.srv.URL, scope))
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return false
	}
}

// basicAuthCheck makes f demand Basic user:pass.
func basicAuthCheck(user, pass string) func(http.ResponseWriter, *http.Request) bool {
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") == want {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return false
	}
}

// staticCreds is a test-only Credentials.
type staticCreds map[string][2]string

func (s staticCreds) Lookup(name string) (string, string, bool) {
	c, ok := s[name]
	return c[0], c[1], ok
}

// fakeClock is a test-only settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// countingObserver is a test-only Observer.
type countingObserver struct {
	mu        sync.Mutex
	responses map[string]int // "op status"
	bytes     map[string]int64
}

func (o *countingObserver) OnResponse(op string, status int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.responses == nil {
		o.responses = map[string]int{}
	}
	o.responses[fmt.Sprintf("%s %d", op, status)]++
}

func (o *countingObserver) OnBytes(op string, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bytes == nil {
		o.bytes = map[string]int64{}
	}
	o.bytes[op] += n
}

// newTestRegistry builds a client for f named "fake.example".
func newTestRegistry(t *testing.T, f *fakeRegistry, mod func(*Config)) *Registry {
	t.Helper()
	cfg := Config{Name: "fake.example", URL: f.srv.URL, Logger: tlog.Logger(t, slog.LevelDebug)}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.retryWait = 10 * time.Millisecond
	t.Cleanup(r.CloseIdleConnections)
	return r
}
