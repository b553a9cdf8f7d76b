package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestParseImageRef(t *testing.T) {
	d := digest.FromString("x")
	for _, tc := range []struct{ in, reg, repo, tag string }{
		{"nginx", "docker.io", "library/nginx", "latest"},
		{"nginx:1.27", "docker.io", "library/nginx", "1.27"},
		{"docker.io/library/nginx:1.27", "docker.io", "library/nginx", "1.27"},
		{"index.docker.io/bitnami/redis", "docker.io", "bitnami/redis", "latest"},
		{"ghcr.io/org/app@" + d.String(), "ghcr.io", "org/app", ""},
		{"ghcr.io/org/app:v1@" + d.String(), "ghcr.io", "org/app", "v1"},
		{"127.0.0.1:5000/team/app:v1", "127.0.0.1:5000", "team/app", "v1"},
		{"localhost/app", "localhost", "app", "latest"},
		{"org/app:v2", "docker.io", "org/app", "v2"},
		{"registry.k8s.io/pause:3.10", "registry.k8s.io", "pause", "3.10"},
	} {
		r, err := parseImageRef(tc.in)
		if err != nil {
			t.Errorf("parseImageRef(%q): %v", tc.in, err)
			continue
		}
		if r.Registry != tc.reg || r.Repository != tc.repo || r.Tag != tc.tag {
			t.Errorf("parseImageRef(%q) = %+v, want %s %s %s", tc.in, r, tc.reg, tc.repo, tc.tag)
		}
		if strings.Contains(tc.in, "@") && r.Digest != d {
			t.Errorf("parseImageRef(%q): digest %q", tc.in, r.Digest)
		}
	}
	for _, bad := range []string{"", "Nginx", "ghcr.io/org/app@sha256:zz", "ghcr.io/org/app:-x", "ghcr.io/", "a..b/c", "ghcr.io/org//app", "ghcr.io/org/app:" + strings.Repeat("x", 200), strings.Repeat("a/", 3000)} {
		if r, err := parseImageRef(bad); err == nil || !strings.Contains(err.Error(), "want [REGISTRY/]REPOSITORY") {
			t.Errorf("parseImageRef(%q) = %+v, %v; want an error saying what it wants", bad, r, err)
		}
	}
}

func TestSelectManifests(t *testing.T) {
	plat := func(os, arch, variant string) ocispec.Descriptor {
		return ocispec.Descriptor{Digest: digest.FromString(os + arch + variant), Platform: &ocispec.Platform{OS: os, Architecture: arch, Variant: variant}}
	}
	att := ocispec.Descriptor{Digest: digest.FromString("att")}
	children := []ocispec.Descriptor{plat("linux", "amd64", ""), plat("linux", "arm64", "v8"), plat("linux", "arm", "v7"), plat("windows", "amd64", ""), att}
	for _, tc := range []struct {
		platforms []string
		want      []int
	}{
		{[]string{"linux/amd64"}, []int{0}},
		{[]string{"linux/arm64"}, []int{1}},
		{[]string{"linux/arm64/v8"}, []int{1}},
		{[]string{"linux/arm64/v9"}, nil},
		{[]string{"linux/arm/v7", "windows/amd64"}, []int{2, 3}},
		{[]string{"darwin/arm64"}, nil},
	} {
		var ps []platform
		for _, s := range tc.platforms {
			p, err := parsePlatform(s)
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
		got := selectManifests(children, ps, false)
		var idx []int
		for _, g := range got {
			for i, c := range children {
				if c.Digest == g.Digest {
					idx = append(idx, i)
				}
			}
		}
		if fmt.Sprint(idx) != fmt.Sprint(tc.want) {
			t.Errorf("platforms %v: children %v, want %v", tc.platforms, idx, tc.want)
		}
	}
	if got := selectManifests(children, nil, true); len(got) != len(children) {
		t.Errorf("all platforms: %d children, want %d (attestations too)", len(got), len(children))
	}
	for _, bad := range []string{"linux", "linux/", "/amd64", "linux/arm/v7/x", "linux/arm/"} {
		if _, err := parsePlatform(bad); err == nil {
			t.Errorf("parsePlatform(%q): no error", bad)
		}
	}
}

// testImage is a pushed multi-platform image: each platform's blobs.
type testImage struct {
	index digest.Digest
	blobs map[string][]ocispec.Descriptor // by platform
}

// pushIndex pushes to the node at addr an index with an image for each
// platform (a config and layers layers of random bytes each) and an
// attestation-like manifest without a platform, tagged tag.
func pushIndex(t *testing.T, addr, repo, tag string, layers int, platforms ...string) testImage {
	t.Helper()
	base := "http://" + addr
	img := testImage{blobs: map[string][]ocispec.Descriptor{}}
	pushBlob := func(b []byte, mt string) ocispec.Descriptor {
		d := digest.FromBytes(b)
		resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("starting an upload: %v %v", err, resp)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		u, _ := url.Parse(base)
		u = u.ResolveReference(loc)
		q := u.Query()
		q.Set("digest", d.String())
		u.RawQuery = q.Encode()
		req, _ := http.NewRequest(http.MethodPut, u.String(), bytes.NewReader(b))
		resp, err = http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("pushing a blob: %v %v", err, resp)
		}
		resp.Body.Close()
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	pushManifest := func(ref, mt string, v any) ocispec.Descriptor {
		b, _ := json.Marshal(v)
		req, _ := http.NewRequest(http.MethodPut, base+"/v2/"+repo+"/manifests/"+ref, bytes.NewReader(b))
		req.Header.Set("Content-Type", mt)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("pushing a manifest: %v %v", err, resp)
		}
		resp.Body.Close()
		return ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	var idx ocispec.Index
	idx.SchemaVersion, idx.MediaType = 2, ocispec.MediaTypeImageIndex
	for _, ps := range platforms {
		p, err := parsePlatform(ps)
		if err != nil {
			t.Fatal(err)
		}
		cfg := pushBlob(fmt.Appendf(nil, `{"architecture":%q,"os":%q,"rootfs":{"type":"layers"},"nonce":%q}`, p.Arch, p.OS, random(8)), ocispec.MediaTypeImageConfig)
		m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg}
		m.SchemaVersion = 2
		img.blobs[ps] = append(img.blobs[ps], cfg)
		for range layers {
			l := pushBlob(random(64<<10), ocispec.MediaTypeImageLayerGzip)
			m.Layers = append(m.Layers, l)
			img.blobs[ps] = append(img.blobs[ps], l)
		}
		desc := pushManifest(pushedDigestRef(t, m), ocispec.MediaTypeImageManifest, m)
		desc.Platform = &ocispec.Platform{OS: p.OS, Architecture: p.Arch, Variant: p.Variant}
		idx.Manifests = append(idx.Manifests, desc)
	}
	// An attestation: a manifest without a platform.
	attCfg := pushBlob([]byte(`{}`), "application/vnd.oci.empty.v1+json")
	att := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: attCfg, Layers: []ocispec.Descriptor{pushBlob(random(100), "application/vnd.in-toto+json")}}
	att.SchemaVersion = 2
	img.blobs["attestation"] = []ocispec.Descriptor{attCfg, att.Layers[0]}
	idx.Manifests = append(idx.Manifests, pushManifest(pushedDigestRef(t, att), ocispec.MediaTypeImageManifest, att))
	img.index = pushManifest(tag, ocispec.MediaTypeImageIndex, idx).Digest
	return img
}

// pushedDigestRef is the digest a manifest is pushed under.
func pushedDigestRef(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return digest.FromBytes(b).String()
}

// blobLines are the digests preload's progress lines name as read.
func blobLines(out string) map[digest.Digest]bool {
	got := map[digest.Digest]bool{}
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, ": blob "); ok {
			f := strings.Fields(rest)
			got[digest.Digest(f[0])] = true
		}
	}
	return got
}

// TestPreloadThroughANode: against a real node holding a pushed
// multi-platform image (the node's own name: no ?ns), preload reads
// exactly the blobs of the platforms asked for and says so line by line.
func TestPreloadThroughANode(t *testing.T) {
	addr := startServe(t)
	img := pushIndex(t, addr, "team/app", "v1", 2, "linux/amd64", "linux/arm64/v8")
	ref := addr + "/team/app:v1"

	out, errOut, err := runApp(t, "preload", "--node", addr, "--platform", "linux/arm64", ref)
	if err != nil {
		t.Fatalf("preload: %v\n%s%s", err, out, errOut)
	}
	got := blobLines(errOut)
	want := img.blobs["linux/arm64/v8"]
	if len(got) != len(want) {
		t.Errorf("preload read %d blobs, want the %d of linux/arm64:\n%s", len(got), len(want), errOut)
	}
	for _, d := range want {
		if !got[d.Digest] {
			t.Errorf("blob %s of linux/arm64 not read:\n%s", d.Digest, errOut)
		}
	}
	if !strings.Contains(errOut, fmt.Sprintf("preloaded 1 of 1 images through 1 node(s): %d blobs", len(want))) {
		t.Errorf("no summary line in:\n%s", errOut)
	}

	// Pinned by digest, every platform: the attestation's blobs too.
	_, errOut, err = runApp(t, "preload", "--node", "http://"+addr, "--all-platforms", addr+"/team/app@"+img.index.String())
	if err != nil {
		t.Fatalf("preload --all-platforms: %v\n%s", err, errOut)
	}
	total := 0
	for _, bs := range img.blobs {
		total += len(bs)
	}
	if got := blobLines(errOut); len(got) != total {
		t.Errorf("--all-platforms read %d blobs, want %d:\n%s", len(got), total, errOut)
	}

	// A platform the index lacks, and an image that is not there: the
	// exit is an error naming the image; the other image is still read.
	_, errOut, err = runApp(t, "preload", "--node", addr, "--platform", "linux/s390x", ref)
	if err == nil || !strings.Contains(err.Error(), ref) || !strings.Contains(errOut, "linux/amd64, linux/arm64/v8") {
		t.Errorf("missing platform: %v\n%s; want an error naming %s and the platforms it has", err, errOut, ref)
	}
	missing := addr + "/team/nothing:v1"
	_, errOut, err = runApp(t, "preload", "--node", addr, "--platform", "linux/amd64", missing, ref)
	if err == nil || !strings.Contains(err.Error(), missing) || strings.Contains(err.Error(), ref+" ") {
		t.Errorf("missing image: %v, want an error naming %s only", err, missing)
	}
	if !strings.Contains(errOut, "preloaded 1 of 2 images") {
		t.Errorf("the good image was not preloaded after the bad one:\n%s", errOut)
	}

	// --zones: two addresses of the one node (no zone) are one zone, read once.
	port := addr[strings.LastIndex(addr, ":")+1:]
	_, errOut, err = runApp(t, "preload", "--zones", "--node", addr, "--node", "localhost:"+port, "--platform", "linux/amd64", ref)
	if err != nil || !strings.Contains(errOut, "zone (none): through http://"+addr) || !strings.Contains(errOut, "through 1 node(s)") {
		t.Errorf("--zones: %v\n%s; want one node for the zone (none)", err, errOut)
	}

	// Usage mistakes.
	for _, args := range [][]string{
		{"preload", ref},
		{"preload", "--platform", "linux/amd64", "--all-platforms", ref},
		{"preload", "--platform", "linux", ref},
		{"preload", "--all-platforms", "--concurrency", "0", ref},
		{"preload", "--all-platforms"},
	} {
		if _, _, err := runApp(t, args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

// TestPreloadVerifiesWhatTheNodeSends: a node (here a stand-in) that
// sends bytes that are not the blob, an oversized manifest, or stops
// sending is an error naming the image, within the stall timeout.
func TestPreloadVerifiesWhatTheNodeSends(t *testing.T) {
	layer := []byte("the real layer")
	cfg := []byte(`{}`)
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(layer), Size: int64(len(layer))}}}
	m.SchemaVersion = 2
	mb, _ := json.Marshal(m)
	var mode string
	var mu sync.Mutex
	var nsSeen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		nsSeen = append(nsSeen, r.URL.Query().Get("ns"))
		mode := mode
		mu.Unlock()
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			if mode == "huge manifest" {
				w.Write(bytes.Repeat([]byte(" "), maxPreloadManifest+10))
				return
			}
			w.Write(mb)
		case strings.HasSuffix(r.URL.Path, m.Config.Digest.String()):
			w.Write(cfg)
		case mode == "wrong bytes":
			w.Write([]byte("not the real layer"[:len(layer)]))
		case mode == "stall":
			w.Header().Set("Content-Length", fmt.Sprint(len(layer)))
			w.WriteHeader(http.StatusOK)
			w.Write(layer[:3])
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		default:
			w.Write(layer)
		}
	}))
	defer srv.Close()
	ref := "ghcr.io/org/app:v1"
	for _, tc := range []struct{ mode, want string }{
		{"", ""},
		{"wrong bytes", "do not match the digest"},
		{"huge manifest", "larger than"},
		{"stall", "no byte of it arrived"},
	} {
		mu.Lock()
		mode, nsSeen = tc.mode, nil
		mu.Unlock()
		start := time.Now()
		_, errOut, err := runApp(t, "preload", "--node", srv.URL, "--all-platforms", "--stall-timeout", "1s", ref)
		if tc.want == "" {
			if err != nil {
				t.Errorf("good node: %v\n%s", err, errOut)
			}
			mu.Lock()
			seen := nsSeen
			mu.Unlock()
			if len(seen) != 3 {
				t.Errorf("good node: %d requests, want manifest, config and layer", len(seen))
			}
			for _, ns := range seen {
				if ns != "ghcr.io" {
					t.Errorf("a request had ns=%q, want ghcr.io on every one", ns)
				}
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), ref) || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: %v\n%s; want an error naming %s and saying %q", tc.mode, err, errOut, ref, tc.want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: took %s", tc.mode, d)
		}
	}
}

// FuzzParseImageRef: whatever parses prints back to a reference that
// parses to the same thing, and its registry is a name a hosts dir could
// hold (never a path).
func FuzzParseImageRef(f *testing.F) {
	for _, s := range []string{"nginx", "docker.io/library/nginx:1.27", "ghcr.io/org/app@sha256:" + strings.Repeat("a", 64), "127.0.0.1:5000/team/app:v1", "[::1]:5000/a/b", "localhost/x", "../x/y", "a:b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseImageRef(s)
		if err != nil {
			return
		}
		again, err := parseImageRef(r.String())
		if err != nil || again != r {
			t.Fatalf("%q parsed to %+v, which prints as %q and parses to %+v, %v", s, r, r.String(), again, err)
		}
		if err := validRegistryName(r.Registry); err != nil || strings.ContainsAny(r.Registry, "/\\") || strings.Contains(r.Registry, "..") {
			t.Fatalf("%q: registry %q: %v", s, r.Registry, err)
		}
	})
}
