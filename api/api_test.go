package api_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// registry is a real node (blob store and Raft metadata on disk) served by
// the real handler over HTTP.
type registry struct {
	t    testing.TB
	url  string
	dir  string
	node *node.Node
	srv  *httptest.Server
	// hdr is sent with every request (a copy of a registry with
	// Authorization set is a client logged in as someone).
	hdr []string
}

func newRegistry(t testing.TB, dir string, tweak func(*api.Config)) *registry {
	t.Helper()
	return newRegistryWith(t, dir, nil, tweak)
}

// newRegistryWith is newRegistry with the node's configuration tweaked too.
func newRegistryWith(t testing.TB, dir string, nodeTweak func(*node.Config), tweak func(*api.Config)) *registry {
	t.Helper()
	log := tlog.Logger(t, slog.LevelWarn)
	cfg := node.DefaultConfig()
	cfg.DataDir = dir
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	if nodeTweak != nil {
		nodeTweak(&cfg)
	}
	n, err := node.Open(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	acfg := api.DefaultConfig()
	if tweak != nil {
		tweak(&acfg)
	}
	reg := prometheus.NewRegistry()
	n.RegisterMetrics(reg)
	h, err := api.New(acfg, n, n, api.NewMetrics(reg), log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	r := &registry{t: t, url: srv.URL, dir: dir, node: n, srv: srv}
	t.Cleanup(r.close)
	return r
}

func (r *registry) close() {
	if r.srv == nil {
		return
	}
	r.srv.Close()
	if err := r.node.Close(); err != nil {
		r.t.Errorf("closing node: %v", err)
	}
	r.srv = nil
}

// do sends a request and returns the response with its body read.
func (r *registry) do(method, path string, body []byte, hdr ...string) (*http.Response, []byte) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, r.url+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	hdr = append(append([]string(nil), r.hdr...), hdr...)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatal(err)
	}
	return resp, b
}

// expect checks a response's status and, for errors, its OCI code.
func expect(t testing.TB, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	if code == "" {
		return
	}
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("%s %s: body %q is not an OCI error", resp.Request.Method, resp.Request.URL.Path, body)
	}
	if e.Errors[0].Code != code || e.Errors[0].Message == "" {
		t.Fatalf("%s %s: error %+v, want code %s with a message", resp.Request.Method, resp.Request.URL.Path, e.Errors[0], code)
	}
}

func (r *registry) pushBlob(repo string, content []byte) digest.Digest {
	r.t.Helper()
	d := digest.FromBytes(content)
	resp, body := r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), content)
	expect(r.t, resp, body, http.StatusCreated, "")
	return d
}

func (r *registry) pushManifest(repo, ref, mediaType string, m []byte) (*http.Response, []byte) {
	r.t.Helper()
	return r.do("PUT", "/v2/"+repo+"/manifests/"+ref, m, "Content-Type", mediaType)
}

// image pushes a config and one layer to repo and returns a manifest over them.
func (r *registry) image(repo string, extra string) []byte {
	r.t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","x":"` + extra + `"}`)
	layer := randomBytes(r.t, 4096)
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: r.pushBlob(repo, cfg), Size: int64(len(cfg))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: r.pushBlob(repo, layer), Size: int64(len(layer))}},
	}
	m.SchemaVersion = 2
	b, err := json.Marshal(m)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBase(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	resp, body := r.do("GET", "/v2/", nil)
	expect(t, resp, body, 200, "")
	if v := resp.Header.Get("Docker-Distribution-API-Version"); v != "registry/2.0" {
		t.Errorf("API version header = %q", v)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/_meshreg/v1/status"} {
		resp, body := r.do("GET", p, nil)
		expect(t, resp, body, 200, "")
	}
}

func TestBlobPullWithRanges(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	content := randomBytes(t, 10000)
	d := r.pushBlob("team/app", content)

	resp, body := r.do("HEAD", "/v2/team/app/blobs/"+d.String(), nil)
	expect(t, resp, body, 200, "")
	if resp.ContentLength != 10000 || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Errorf("HEAD: length %d digest %q", resp.ContentLength, resp.Header.Get("Docker-Content-Digest"))
	}
	resp, body = r.do("GET", "/v2/team/app/blobs/"+d.String(), nil)
	expect(t, resp, body, 200, "")
	if !bytes.Equal(body, content) {
		t.Error("GET returned different bytes")
	}
	resp, body = r.do("GET", "/v2/team/app/blobs/"+d.String(), nil, "Range", "bytes=100-199")
	expect(t, resp, body, http.StatusPartialContent, "")
	if !bytes.Equal(body, content[100:200]) || resp.Header.Get("Content-Range") != "bytes 100-199/10000" {
		t.Errorf("range: %d bytes, Content-Range %q", len(body), resp.Header.Get("Content-Range"))
	}
	resp, body = r.do("GET", "/v2/team/app/blobs/"+d.String(), nil, "Range", "bytes=20000-")
	expect(t, resp, body, http.StatusRequestedRangeNotSatisfiable, "")

	// A blob is pullable only from repositories it is linked to.
	resp, body = r.do("GET", "/v2/other/blobs/"+d.String(), nil)
	expect(t, resp, body, 404, "BLOB_UNKNOWN")
	resp, body = r.do("GET", "/v2/team/app/blobs/sha256:0000", nil)
	expect(t, resp, body, 400, "DIGEST_INVALID")
}

func TestChunkedUpload(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	content := randomBytes(t, 3000)
	d := digest.FromBytes(content)

	resp, body := r.do("POST", "/v2/app/blobs/uploads/", nil)
	expect(t, resp, body, 202, "")
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/v2/app/blobs/uploads/") || resp.Header.Get("Range") != "0-0" {
		t.Fatalf("start: Location %q Range %q", loc, resp.Header.Get("Range"))
	}
	resp, body = r.do("PATCH", loc, content[:1000], "Content-Range", "0-999", "Content-Type", "application/octet-stream")
	expect(t, resp, body, 202, "")
	if resp.Header.Get("Range") != "0-999" {
		t.Errorf("after chunk 1: Range %q", resp.Header.Get("Range"))
	}
	// Out of order: the spec answers 416 and the session is unchanged.
	resp, body = r.do("PATCH", loc, content[2000:], "Content-Range", "2000-2999")
	expect(t, resp, body, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
	resp, body = r.do("GET", loc, nil)
	expect(t, resp, body, http.StatusNoContent, "")
	if resp.Header.Get("Range") != "0-999" {
		t.Errorf("status: Range %q", resp.Header.Get("Range"))
	}
	resp, body = r.do("PATCH", loc, content[1000:2000], "Content-Range", "1000-1999")
	expect(t, resp, body, 202, "")
	// The wrong digest is refused and nothing is stored under either digest.
	wrong := digest.FromString("wrong")
	resp, body = r.do("PUT", loc+"?digest="+wrong.String(), content[2000:], "Content-Range", "2000-2999")
	expect(t, resp, body, 400, "DIGEST_INVALID")
	resp, body = r.do("HEAD", "/v2/app/blobs/"+wrong.String(), nil)
	expect(t, resp, body, 404, "")
	resp, body = r.do("PUT", loc+"?digest="+d.String(), nil)
	expect(t, resp, body, 201, "")
	if resp.Header.Get("Location") != "/v2/app/blobs/"+d.String() {
		t.Errorf("commit Location %q", resp.Header.Get("Location"))
	}
	resp, body = r.do("GET", "/v2/app/blobs/"+d.String(), nil)
	expect(t, resp, body, 200, "")
	if !bytes.Equal(body, content) {
		t.Error("chunked blob differs")
	}
	// The session is gone once committed.
	resp, body = r.do("GET", loc, nil)
	expect(t, resp, body, 404, "BLOB_UPLOAD_UNKNOWN")
	resp, body = r.do("PATCH", "/v2/app/blobs/uploads/not-an-id", []byte("x"))
	expect(t, resp, body, 404, "BLOB_UPLOAD_UNKNOWN")
}

func TestCancelAndMount(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	resp, body := r.do("POST", "/v2/app/blobs/uploads/", nil)
	expect(t, resp, body, 202, "")
	loc := resp.Header.Get("Location")
	resp, body = r.do("DELETE", loc, nil)
	expect(t, resp, body, http.StatusNoContent, "")
	resp, body = r.do("GET", loc, nil)
	expect(t, resp, body, 404, "BLOB_UPLOAD_UNKNOWN")

	d := r.pushBlob("src", []byte("shared layer"))
	resp, body = r.do("POST", "/v2/dst/blobs/uploads/?mount="+d.String()+"&from=src", nil)
	expect(t, resp, body, 201, "")
	// Without from, nothing is mounted (the node holding the bytes does not
	// make them anyone's): the spec's fallback, a new upload session.
	resp, body = r.do("POST", "/v2/dst2/blobs/uploads/?mount="+d.String(), nil)
	expect(t, resp, body, 202, "")
	if !strings.HasPrefix(resp.Header.Get("Location"), "/v2/dst2/blobs/uploads/") {
		t.Errorf("mount without from: Location %q, want a new upload session", resp.Header.Get("Location"))
	}
	resp, body = r.do("GET", "/v2/dst2/blobs/"+d.String(), nil)
	expect(t, resp, body, 404, "BLOB_UNKNOWN")
	// Mounting what the source does not hold starts an upload instead.
	resp, body = r.do("POST", "/v2/dst/blobs/uploads/?mount="+digest.FromString("absent").String()+"&from=src", nil)
	expect(t, resp, body, 202, "")
}

func TestManifests(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), func(c *api.Config) { c.MaxManifestSize = 64 << 10 })
	m := r.image("team/app", "1")
	d := digest.FromBytes(m)

	resp, body := r.pushManifest("team/app", "v1", ocispec.MediaTypeImageManifest, m)
	expect(t, resp, body, 201, "")
	if resp.Header.Get("Docker-Content-Digest") != d.String() || resp.Header.Get("Location") != "/v2/team/app/manifests/"+d.String() {
		t.Errorf("PUT headers: %v", resp.Header)
	}
	for _, ref := range []string{"v1", d.String()} {
		resp, body = r.do("GET", "/v2/team/app/manifests/"+ref, nil)
		expect(t, resp, body, 200, "")
		if !bytes.Equal(body, m) || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageManifest || resp.Header.Get("Docker-Content-Digest") != d.String() {
			t.Errorf("GET %s: type %q digest %q", ref, resp.Header.Get("Content-Type"), resp.Header.Get("Docker-Content-Digest"))
		}
	}
	resp, body = r.do("GET", "/v2/team/app/manifests/nope", nil)
	expect(t, resp, body, 404, "MANIFEST_UNKNOWN")

	// A manifest whose blobs are not in the repository is refused.
	resp, body = r.pushManifest("elsewhere", "v1", ocispec.MediaTypeImageManifest, m)
	expect(t, resp, body, 400, "MANIFEST_BLOB_UNKNOWN")
	resp, body = r.pushManifest("team/app", "bad", ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2,`))
	expect(t, resp, body, 400, "MANIFEST_INVALID")
	resp, body = r.pushManifest("team/app", "big", ocispec.MediaTypeImageManifest, bytes.Repeat([]byte(" "), 65<<10))
	expect(t, resp, body, http.StatusRequestEntityTooLarge, "SIZE_INVALID")
	resp, body = r.pushManifest("team/app", digest.FromString("x").String(), ocispec.MediaTypeImageManifest, m)
	expect(t, resp, body, 400, "DIGEST_INVALID")
	// None of the refused pushes changed anything.
	resp, body = r.do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 200, "")
	if !strings.Contains(string(body), `"tags":["v1"]`) {
		t.Errorf("tags after refused pushes: %s", body)
	}
	resp, body = r.do("GET", "/v2/elsewhere/tags/list", nil)
	expect(t, resp, body, 404, "NAME_UNKNOWN")

	// Deleting a tag keeps the manifest; deleting the manifest drops its tags.
	resp, body = r.pushManifest("team/app", "v2", ocispec.MediaTypeImageManifest, m)
	expect(t, resp, body, 201, "")
	resp, body = r.do("DELETE", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, 202, "")
	resp, body = r.do("GET", "/v2/team/app/manifests/"+d.String(), nil)
	expect(t, resp, body, 200, "")
	resp, body = r.do("DELETE", "/v2/team/app/manifests/"+d.String(), nil)
	expect(t, resp, body, 202, "")
	resp, body = r.do("GET", "/v2/team/app/manifests/v2", nil)
	expect(t, resp, body, 404, "MANIFEST_UNKNOWN")
}

func TestBadNames(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	for _, p := range []string{
		"/v2/../etc/manifests/latest",
		"/v2/a/%2e%2e/b/manifests/latest",
		"/v2/a/%2E%2E/blobs/uploads/",
		"/v2/UPPER/tags/list",
		"/v2/a//b/manifests/latest",
	} {
		resp, body := r.do("GET", p, nil)
		expect(t, resp, body, 400, "NAME_INVALID")
	}
	resp, body := r.do("GET", "/v2/app/manifests/bad:tag:x", nil)
	expect(t, resp, body, 400, "DIGEST_INVALID")
	resp, body = r.do("PATCH", "/v2/app/manifests/v1", nil)
	expect(t, resp, body, 405, "UNSUPPORTED")
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == "etc" || e.Name() == ".." {
			t.Errorf("a path trick created %s in the data dir", e.Name())
		}
	}
}

func TestListingPagination(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	m := r.image("app", "p")
	for _, tag := range []string{"c", "a", "b", "d"} {
		resp, body := r.pushManifest("app", tag, ocispec.MediaTypeImageManifest, m)
		expect(t, resp, body, 201, "")
	}
	resp, body := r.do("GET", "/v2/app/tags/list?n=2", nil)
	expect(t, resp, body, 200, "")
	if !strings.Contains(string(body), `"tags":["a","b"]`) || resp.Header.Get("Link") != `</v2/app/tags/list?last=b&n=2>; rel="next"` {
		t.Errorf("page 1: %s Link %q", body, resp.Header.Get("Link"))
	}
	resp, body = r.do("GET", "/v2/app/tags/list?n=2&last=b", nil)
	expect(t, resp, body, 200, "")
	if !strings.Contains(string(body), `"tags":["c","d"]`) || resp.Header.Get("Link") != "" {
		t.Errorf("page 2: %s Link %q", body, resp.Header.Get("Link"))
	}
	r.pushBlob("zzz/other", []byte("x"))
	resp, body = r.do("GET", "/v2/_catalog?n=1", nil)
	expect(t, resp, body, 200, "")
	if string(body) != `{"repositories":["app"]}` || resp.Header.Get("Link") == "" {
		t.Errorf("catalog page 1: %s Link %q", body, resp.Header.Get("Link"))
	}
	resp, body = r.do("GET", "/v2/app/tags/list?n=-1", nil)
	expect(t, resp, body, 400, "")
}

func TestReferrers(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	subject := r.image("app", "s")
	sd := digest.FromBytes(subject)
	empty := r.pushBlob("app", []byte("{}"))
	sig := func(at string) []byte {
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":%q,"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[],"subject":{"mediaType":%q,"digest":%q,"size":%d},"annotations":{"k":"v"}}`,
			ocispec.MediaTypeImageManifest, at, empty, ocispec.MediaTypeImageManifest, sd, len(subject)))
	}
	// A referrer may arrive before its subject.
	resp, body := r.pushManifest("app", digest.FromBytes(sig("application/vnd.example.sig")).String(), ocispec.MediaTypeImageManifest, sig("application/vnd.example.sig"))
	expect(t, resp, body, 201, "")
	if resp.Header.Get("OCI-Subject") != sd.String() {
		t.Errorf("OCI-Subject = %q", resp.Header.Get("OCI-Subject"))
	}
	resp, body = r.pushManifest("app", "sbom", ocispec.MediaTypeImageManifest, sig("application/vnd.example.sbom"))
	expect(t, resp, body, 201, "")
	resp, body = r.pushManifest("app", "v1", ocispec.MediaTypeImageManifest, subject)
	expect(t, resp, body, 201, "")

	index := func(query string) (*http.Response, ocispec.Index) {
		resp, body := r.do("GET", "/v2/app/referrers/"+sd.String()+query, nil)
		expect(t, resp, body, 200, "")
		var idx ocispec.Index
		if err := json.Unmarshal(body, &idx); err != nil {
			t.Fatal(err)
		}
		if resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
			t.Errorf("referrers Content-Type %q", resp.Header.Get("Content-Type"))
		}
		return resp, idx
	}
	_, idx := index("")
	if len(idx.Manifests) != 2 || idx.Manifests[0].Annotations["k"] != "v" {
		t.Fatalf("referrers: %+v", idx.Manifests)
	}
	resp, idx = index("?artifactType=application/vnd.example.sbom")
	if len(idx.Manifests) != 1 || idx.Manifests[0].ArtifactType != "application/vnd.example.sbom" || resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("filtered referrers: %+v (header %q)", idx.Manifests, resp.Header.Get("OCI-Filters-Applied"))
	}
	// Deleting a referrer removes it from the index.
	resp, body = r.do("DELETE", "/v2/app/manifests/"+digest.FromBytes(sig("application/vnd.example.sbom")).String(), nil)
	expect(t, resp, body, 202, "")
	_, idx = index("")
	if len(idx.Manifests) != 1 {
		t.Errorf("after delete: %+v", idx.Manifests)
	}
	// No referrers: an empty index, not 404.
	resp, body = r.do("GET", "/v2/nothing/referrers/"+digest.FromString("none").String(), nil)
	expect(t, resp, body, 200, "")
	if !strings.Contains(string(body), `"manifests":[]`) {
		t.Errorf("empty referrers: %s", body)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := newRegistry(t, dir, nil)
	m := r.image("app", "r")
	resp, body := r.pushManifest("app", "v1", ocispec.MediaTypeImageManifest, m)
	expect(t, resp, body, 201, "")
	r.close()

	r2 := newRegistry(t, dir, nil)
	resp, body = r2.do("GET", "/v2/app/manifests/v1", nil)
	expect(t, resp, body, 200, "")
	if !bytes.Equal(body, m) {
		t.Error("manifest changed across restart")
	}
	var parsed ocispec.Manifest
	if err := json.Unmarshal(m, &parsed); err != nil {
		t.Fatal(err)
	}
	resp, body = r2.do("HEAD", "/v2/app/blobs/"+parsed.Layers[0].Digest.String(), nil)
	expect(t, resp, body, 200, "")
}

func TestConcurrentPushesOfOneBlob(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	content := randomBytes(t, 1<<20)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := digest.FromBytes(content)
			req, _ := http.NewRequest("POST", fmt.Sprintf("%s/v2/app%d/blobs/uploads/?digest=%s", r.url, i%2, d), bytes.NewReader(content))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 201 {
				t.Errorf("push %d: status %d", i, resp.StatusCode)
			}
		}()
	}
	wg.Wait()
}

// A client that stops sending mid-body is cut off after the idle timeout
// and leaves no blob and no upload file behind.
func TestStalledAndAbortedUploads(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), func(c *api.Config) { c.BodyIdleTimeout = 300 * time.Millisecond })
	content := randomBytes(t, 1<<20)
	d := digest.FromBytes(content)
	host := strings.TrimPrefix(r.url, "http://")

	for _, mode := range []string{"stall", "abort"} {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /v2/app/blobs/uploads/?digest=%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", d, host, len(content))
		if _, err := conn.Write(content[:len(content)/2]); err != nil {
			t.Fatal(err)
		}
		if mode == "abort" {
			conn.Close()
		} else {
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			// The server answers or closes; either way it must not wait forever.
			_, _ = io.ReadAll(conn)
			conn.Close()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body := r.do("HEAD", "/v2/app/blobs/"+d.String(), nil)
		expect(t, resp, body, 404, "")
		left, _ := filepath.Glob(filepath.Join(r.dir, "uploads", "*"))
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload files left behind: %v", left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkManifestGet measures GET of a manifest by tag through the real
// handler and node.
func BenchmarkManifestGet(b *testing.B) {
	r := newRegistry(b, b.TempDir(), nil)
	m := r.image("bench/app", "get")
	resp, body := r.pushManifest("bench/app", "v1", ocispec.MediaTypeImageManifest, m)
	expect(b, resp, body, 201, "")
	b.SetBytes(int64(len(m)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := http.Get(r.url + "/v2/bench/app/manifests/v1")
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}

// BenchmarkManifestPut measures validating and committing a manifest (one
// Raft entry each) under a new tag per iteration.
func BenchmarkManifestPut(b *testing.B) {
	r := newRegistry(b, b.TempDir(), nil)
	m := r.image("bench/app", "put")
	b.SetBytes(int64(len(m)))
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		resp, body := r.pushManifest("bench/app", fmt.Sprintf("t%d", i), ocispec.MediaTypeImageManifest, m)
		if resp.StatusCode != 201 {
			b.Fatalf("status %d: %s", resp.StatusCode, body)
		}
	}
}
