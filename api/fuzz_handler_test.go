package api_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/node/mirror"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// fuzzResponseBound is how long one fuzzed request may take. A real request
// on a one-node cluster answers in milliseconds; this leaves room for a
// loaded machine, not for a handler that waits on something that never
// comes.
const fuzzResponseBound = 20 * time.Second

// panicCatcher records a panic of the handler: net/http would recover it,
// log it and drop the connection, which a client cannot tell from a
// network error.
type panicCatcher struct {
	next http.Handler
	mu   sync.Mutex
	msg  string
}

func (p *panicCatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			p.mu.Lock()
			p.msg = fmt.Sprintf("%s %s: panic: %v\n%s", r.Method, r.URL, v, debug.Stack())
			p.mu.Unlock()
			panic(http.ErrAbortHandler)
		}
	}()
	p.next.ServeHTTP(w, r)
}

func (p *panicCatcher) take() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.msg
	p.msg = ""
	return m
}

// fuzzRegistry is a real node (badger, raft, blobstore in a temp dir) behind
// the real handler on a loopback HTTP server, with one image pushed.
type fuzzRegistry struct {
	url    string
	catch  *panicCatcher
	client *http.Client
	blob   digest.Digest
	mfst   digest.Digest
}

func newFuzzRegistry(f *testing.F) *fuzzRegistry {
	f.Helper()
	log := tlog.Logger(f, slog.LevelError+4) // quiet: fuzzing makes errors on purpose
	cfg := node.DefaultConfig()
	cfg.DataDir = f.TempDir()
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	// A mirrored upstream that is down (nothing listens on port 1): ?ns=
	// and <ns>/ requests take the mirror's paths and its failures.
	cfg.Mirror = mirror.Config{Upstreams: []mirror.UpstreamConfig{{Name: "docker.io", URL: "http://127.0.0.1:1", Revalidate: time.Second}}}
	n, err := node.Open(cfg, log)
	if err != nil {
		f.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	n.RegisterMetrics(reg)
	acfg := api.DefaultConfig()
	acfg.BodyIdleTimeout = 5 * time.Second
	acfg.Mirror = api.Mirroring{Upstreams: cfg.Mirror.Names(), Default: cfg.Mirror.DefaultUpstream()}
	h, err := api.New(acfg, n, n, api.NewMetrics(reg), log)
	if err != nil {
		f.Fatal(err)
	}
	catch := &panicCatcher{next: h}
	srv := httptest.NewUnstartedServer(catch)
	srv.Config.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	srv.Start()
	f.Cleanup(func() {
		srv.Close()
		if err := n.Close(); err != nil {
			f.Errorf("closing node: %v", err)
		}
	})
	fr := &fuzzRegistry{url: srv.URL, catch: catch, client: &http.Client{
		Timeout: fuzzResponseBound,
		// Redirects are answers too: the fuzz target checks the first.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true},
	}}

	// One image, so that fuzzed reads and deletes find something.
	put := func(method, path, ct string, body []byte, want int) {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := fr.client.Do(req)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			f.Fatalf("seeding the registry: %s %s = %d %s", method, path, resp.StatusCode, b)
		}
	}
	cfgBlob := []byte(`{"architecture":"amd64","os":"linux"}`)
	fr.blob = digest.FromBytes(cfgBlob)
	put("POST", "/v2/fuzz/app/blobs/uploads/?digest="+fr.blob.String(), "", cfgBlob, http.StatusCreated)
	m, _ := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: fr.blob, Size: int64(len(cfgBlob))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: fr.blob, Size: int64(len(cfgBlob))}},
	})
	fr.mfst = digest.FromBytes(m)
	put("PUT", "/v2/fuzz/app/manifests/v1", ocispec.MediaTypeImageManifest, m, http.StatusCreated)
	return fr
}

// saneStatus is every status the /v2/ API may answer with. A 500 is not
// among them: a request, however bad, gets a 4xx that says what is wrong,
// and a 500 means the registry failed on it.
var saneStatus = map[int]bool{
	200: true, 201: true, 202: true, 204: true, 206: true, 307: true,
	400: true, 401: true, 403: true, 404: true, 405: true, 406: true, 409: true, 411: true,
	413: true, 414: true, 415: true, 416: true, 429: true, 431: true, 503: true, 507: true,
}

// netHTTPStatus are the answers net/http's server gives by itself, before
// any handler runs (malformed request line, headers, framing).
var netHTTPStatus = map[int]bool{400: true, 413: true, 417: true, 431: true, 501: true, 505: true}

// FuzzHandler sends a fuzzed request (method, path and query, headers,
// body) to the real handler of a real one-node registry. Whatever the
// request: no panic, an answer within fuzzResponseBound, a status from
// saneStatus, and on /v2/ an OCI error body for every 4xx and 5xx.
func FuzzHandler(f *testing.F) {
	r := newFuzzRegistry(f)
	sha := r.blob.String()
	m := r.mfst.String()
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + sha + `","size":37},"layers":[]}`
	index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + m + `","size":300}]}`
	referrer := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + sha + `","size":37},"layers":[],"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + m + `","size":300},"annotations":{"a":"b"}}`
	// Issue 9: a PUT with more ?tag= than Go's URL parser keeps (10,000)
	// was answered 201, with none of the tags. First, before the seeds
	// that delete what it refers to.
	many := make([]string, 10001)
	for i := range many {
		many[i] = "tag=t" + strconv.Itoa(i)
	}
	f.Add("PUT", "/v2/fuzz/app/manifests/v3?"+strings.Join(many, "&"), "Content-Type: application/vnd.oci.image.manifest.v1+json", []byte(manifest))
	for _, s := range []struct {
		method, target, headers, body string
	}{
		{"GET", "/v2/", "", ""},
		{"GET", "/v2/library/nginx/manifests/1.27?ns=docker.io", "", ""},
		{"HEAD", "/v2/nginx/manifests/" + m + "?ns=docker.io", "", ""},
		{"GET", "/v2/docker.io/library/nginx/blobs/" + sha, "", ""},
		{"GET", "/v2/fuzz/app/manifests/v1?ns=evil.example", "", ""},
		{"PUT", "/v2/docker.io/x/manifests/v1", "Content-Type: application/vnd.oci.image.manifest.v1+json", manifest},
		{"GET", "/v2/library/nginx/tags/list?ns=docker.io", "", ""},
		{"GET", "/v2/_catalog?n=1", "", ""},
		{"GET", "/v2/_catalog?n=1&last=a", "", ""},
		{"GET", "/v2/fuzz/app/tags/list?n=10&last=v0", "", ""},
		{"GET", "/v2/fuzz/app/manifests/v1", "Accept: application/vnd.oci.image.manifest.v1+json", ""},
		{"HEAD", "/v2/fuzz/app/manifests/" + m, "", ""},
		{"GET", "/v2/fuzz/app/manifests/v1?consistent=1", "", ""},
		{"GET", "/v2/fuzz/app/blobs/" + sha, "Range: bytes=1-5", ""},
		{"GET", "/v2/fuzz/app/blobs/" + sha, "Range: bytes=-5", ""},
		{"HEAD", "/v2/fuzz/app/blobs/" + sha, "", ""},
		{"GET", "/v2/fuzz/app/referrers/" + m + "?artifactType=application/vnd.example.sig", "", ""},
		{"POST", "/v2/fuzz/app/blobs/uploads/", "", ""},
		{"POST", "/v2/fuzz/app/blobs/uploads/?digest=" + sha, "Content-Type: application/octet-stream", `{"architecture":"amd64","os":"linux"}`},
		{"POST", "/v2/fuzz/other/blobs/uploads/?mount=" + sha + "&from=fuzz/app", "", ""},
		{"POST", "/v2/fuzz/other/blobs/uploads/?mount=" + sha, "", ""},
		{"PATCH", "/v2/fuzz/app/blobs/uploads/0123456789abcdef", "Content-Range: 0-3\nContent-Type: application/octet-stream", "abcd"},
		{"PUT", "/v2/fuzz/app/blobs/uploads/0123456789abcdef?digest=" + sha, "Content-Length: 0", ""},
		{"GET", "/v2/fuzz/app/blobs/uploads/0123456789abcdef", "", ""},
		{"DELETE", "/v2/fuzz/app/blobs/uploads/0123456789abcdef", "", ""},
		{"PUT", "/v2/fuzz/app/manifests/v2", "Content-Type: application/vnd.oci.image.manifest.v1+json", manifest},
		{"PUT", "/v2/fuzz/app/manifests/v2?tag=a&tag=b", "Content-Type: application/vnd.oci.image.manifest.v1+json", manifest},
		{"PUT", "/v2/fuzz/app/manifests/idx", "Content-Type: application/vnd.oci.image.index.v1+json", index},
		{"PUT", "/v2/fuzz/app/manifests/sig", "Content-Type: application/vnd.oci.image.manifest.v1+json", referrer},
		{"PUT", "/v2/fuzz/app/manifests/html", "Content-Type: text/html", "<script>alert(1)</script>"},
		{"DELETE", "/v2/fuzz/app/manifests/v2", "", ""},
		{"DELETE", "/v2/fuzz/app/manifests/" + m, "", ""},
		{"DELETE", "/v2/fuzz/app/blobs/" + sha, "", ""},
		{"GET", "/v2/EVIL/../x/manifests/v1", "", ""},
		{"BREW", "/v2/fuzz/app/manifests/v1", "", ""},
		{"GET", "/v2/fuzz/app/manifests/sha256:00", "", ""},
		{"GET", "/v2/fuzz/app/tags/list?n=-1", "", ""},
		{"GET", "/v2/fuzz/app/tags/list?n=99999999999999999999", "", ""},
		{"GET", "/healthz", "", ""},
		{"GET", "/readyz", "", ""},
		{"GET", "/metrics", "", ""},
		{"GET", "/_meshreg/v1/status", "", ""},
		{"GET", "/_meshreg/ui/?n=1&last=fuzz/app&refresh=0&login=1", "", ""},
		{"HEAD", "/_meshreg/ui/?n=100&refresh=3600", "", ""},
	} {
		f.Add(s.method, s.target, s.headers, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, method, target, headers string, body []byte) {
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
		// The admin endpoints change the cluster (remove a member); the
		// fuzzer must not dismantle the node it tests.
		if method == http.MethodDelete && strings.HasPrefix(target, "/_meshreg/") {
			return
		}
		u, err := url.Parse(r.url + target)
		if err != nil || u.Host != strings.TrimPrefix(r.url, "http://") {
			return // not a request a client can send to this server
		}
		req, err := http.NewRequest(method, u.String(), bytes.NewReader(body))
		if err != nil {
			return
		}
		for i, line := range strings.Split(headers, "\n") {
			if i == 32 {
				break
			}
			k, v, ok := strings.Cut(line, ":")
			if ok {
				req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
		if len(body) == 0 {
			req.Body = nil
			req.ContentLength = 0
		}
		start := time.Now()
		resp, err := r.client.Do(req)
		if p := r.catch.take(); p != "" {
			t.Fatal(p)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s %q: no answer within %s: %v", method, target, fuzzResponseBound, err)
			}
			return // the client refused to send it (bad header, bad framing)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		if p := r.catch.take(); p != "" {
			t.Fatal(p)
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%s %q: the body did not end within %s: %v", method, target, fuzzResponseBound, err)
			}
			t.Fatalf("%s %q: reading the answer (%d): %v", method, target, resp.StatusCode, err)
		}
		if d := time.Since(start); d > fuzzResponseBound {
			t.Fatalf("%s %q: answered after %s", method, target, d)
		}
		fromHandler := resp.Header.Get("Docker-Distribution-API-Version") != "" || !isV2(u.Path)
		if !fromHandler && netHTTPStatus[resp.StatusCode] {
			return // net/http refused it before the handler ran
		}
		if !saneStatus[resp.StatusCode] {
			t.Fatalf("%s %q (headers %q, %d body bytes): status %d; body %.500s", method, target, headers, len(body), resp.StatusCode, b)
		}
		if _, qerr := url.ParseQuery(u.RawQuery); qerr != nil && strings.Contains(qerr.Error(), "exceeded limit") &&
			resp.StatusCode < 300 && method != http.MethodGet && method != http.MethodHead {
			// Go's parser drops every parameter past its limit: a write
			// that went on without them did not do what it was asked.
			t.Fatalf("%s %.200q: %d to a write whose query has more parameters than Go parses (%v)", method, target, resp.StatusCode, qerr)
		}
		if !isV2(u.Path) || resp.StatusCode < 400 || method == http.MethodHead {
			return
		}
		if !fromHandler {
			t.Fatalf("%s %q: status %d without the API version header; body %.500s", method, target, resp.StatusCode, b)
		}
		var e struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		if err := json.Unmarshal(b, &e); err != nil || len(e.Errors) == 0 || e.Errors[0].Code == "" || e.Errors[0].Message == "" {
			t.Fatalf("%s %q: status %d with body %.500q: not an OCI error with a code and a message", method, target, resp.StatusCode, b)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s %q: error body served as %q", method, target, ct)
		}
	})
}

func isV2(path string) bool { return path == "/v2" || strings.HasPrefix(path, "/v2/") }
