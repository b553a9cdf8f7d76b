package testnet_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/testnet"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	orasArtifactType = "application/vnd.meshreg.e2e.test.v1"
	orasSigType      = "application/vnd.meshreg.e2e.signature.v1+json"
)

// orasDesc is what `oras push|attach --format json` prints.
type orasDesc struct {
	Reference    string        `json:"reference"`
	MediaType    string        `json:"mediaType"`
	Digest       digest.Digest `json:"digest"`
	Size         int64         `json:"size"`
	ArtifactType string        `json:"artifactType"`
}

// orasTree is what `oras discover --format json` prints: the subject and
// its referrers, recursively.
type orasTree struct {
	orasDesc
	Referrers []orasTree `json:"referrers"`
}

// TestOrasRoundTrip pushes files as an OCI artifact with oras, pulls them
// back, attaches a signature-like artifact to an image and discovers it
// through the referrers API, as an oras user would.
func TestOrasRoundTrip(t *testing.T) {
	t.Parallel()
	n := testnet.StartNode(t, testnet.Options{})
	oras := testnet.Tool(t, "oras")
	work := t.TempDir()
	r := testnet.Runner{T: t, Path: oras, Dir: work}
	repo := testnet.UniqueRepo("e2e/oras")
	ref := n.Host() + "/" + repo

	files := map[string][]byte{
		"a.txt": []byte(hex.EncodeToString(testnet.RandomBytes(512)) + "\n"),
		"b.bin": testnet.RandomBytes(1 << 20),
	}
	for name, b := range files {
		writeFile(t, filepath.Join(work, name), b)
	}

	// Push the files as an artifact with an artifact type.
	var art orasDesc
	orasJSON(t, r.Run("push", "--plain-http", "--no-tty", "--format", "json", "--artifact-type", orasArtifactType,
		ref+":art", "a.txt:text/plain", "b.bin:application/octet-stream"), &art)
	if art.ArtifactType != orasArtifactType {
		t.Errorf("oras push: artifactType %q, want %q", art.ArtifactType, orasArtifactType)
	}

	// Manifest fetch: bytes hash to the digest, the artifact type and both
	// files are there.
	mb := r.Run("manifest", "fetch", "--plain-http", ref+"@"+art.Digest.String())
	if got := digest.FromBytes(mb); got != art.Digest {
		t.Errorf("oras manifest fetch: body hashes to %s, want %s", got, art.Digest)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, mb)
	}
	if m.ArtifactType != orasArtifactType || len(m.Layers) != len(files) {
		t.Errorf("manifest: artifactType %q with %d layers, want %q with %d:\n%s", m.ArtifactType, len(m.Layers), orasArtifactType, len(files), mb)
	}
	if tagged := r.Run("manifest", "fetch", "--plain-http", "--descriptor", ref+":art"); !bytes.Contains(tagged, []byte(art.Digest)) {
		t.Errorf("oras manifest fetch --descriptor %s:art does not name %s: %s", ref, art.Digest, tagged)
	}

	// Pull into a fresh dir: same bytes.
	r.Run("pull", "--plain-http", "--no-tty", "-o", "pulled", ref+":art")
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(work, "pulled", name))
		if err != nil {
			t.Errorf("oras pull: %v", err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("oras pull: %s differs from what was pushed (%d bytes, want %d)", name, len(got), len(want))
		}
	}

	// Blob fetch each layer: same bytes as the file it came from.
	for _, l := range m.Layers {
		name := l.Annotations[ocispec.AnnotationTitle]
		out := filepath.Join(work, "blob-"+name)
		r.Run("blob", "fetch", "--plain-http", "--output", out, ref+"@"+l.Digest.String())
		if got, err := os.ReadFile(out); err != nil {
			t.Error(err)
		} else if !bytes.Equal(got, files[name]) {
			t.Errorf("oras blob fetch %s (%s): differs from the file pushed", l.Digest, name)
		}
	}

	// An image to sign: an image config and one layer.
	diffID, err := testnet.WriteLayerTar(filepath.Join(work, "layer.tar"), "app", 2, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	})
	writeFile(t, filepath.Join(work, "config.json"), cfg)
	var image orasDesc
	orasJSON(t, r.Run("push", "--plain-http", "--no-tty", "--format", "json", ref+":img",
		"--config", "config.json:"+ocispec.MediaTypeImageConfig, "layer.tar:"+ocispec.MediaTypeImageLayer), &image)

	// Attach a signature to it, then discover it.
	sig := fmt.Appendf(nil, `{"critical":{"image":{"docker-manifest-digest":%q},"type":"meshreg e2e signature"}}`, image.Digest)
	writeFile(t, filepath.Join(work, "sig.json"), sig)
	var sigDesc orasDesc
	orasJSON(t, r.Run("attach", "--plain-http", "--no-tty", "--format", "json", "--artifact-type", orasSigType,
		ref+"@"+image.Digest.String(), "sig.json:application/json"), &sigDesc)

	var tree orasTree
	orasJSON(t, r.Run("discover", "--plain-http", "--format", "json", ref+"@"+image.Digest.String()), &tree)
	if !hasReferrer(tree, sigDesc.Digest, orasSigType) {
		t.Errorf("oras discover %s@%s: the attached %s (%s) is not among the referrers: %+v", ref, image.Digest, sigDesc.Digest, orasSigType, tree)
	}
	var filtered orasTree
	orasJSON(t, r.Run("discover", "--plain-http", "--format", "json", "--artifact-type", "application/vnd.meshreg.e2e.other", ref+"@"+image.Digest.String()), &filtered)
	if hasReferrer(filtered, sigDesc.Digest, "") {
		t.Errorf("oras discover --artifact-type application/vnd.meshreg.e2e.other still lists %s", sigDesc.Digest)
	}

	// The signature points at the image and carries our bytes.
	sm := r.Run("manifest", "fetch", "--plain-http", ref+"@"+sigDesc.Digest.String())
	var sman ocispec.Manifest
	if err := json.Unmarshal(sm, &sman); err != nil {
		t.Fatalf("signature manifest: %v\n%s", err, sm)
	}
	if sman.Subject == nil || sman.Subject.Digest != image.Digest {
		t.Errorf("signature manifest subject = %+v, want %s", sman.Subject, image.Digest)
	}
	if len(sman.Layers) == 1 {
		out := filepath.Join(work, "sig-fetched.json")
		r.Run("blob", "fetch", "--plain-http", "--output", out, ref+"@"+sman.Layers[0].Digest.String())
		if got, _ := os.ReadFile(out); !bytes.Equal(got, sig) {
			t.Errorf("oras blob fetch of the signature: %q, want %q", got, sig)
		}
	} else {
		t.Errorf("signature manifest has %d layers, want 1:\n%s", len(sman.Layers), sm)
	}

	checkReferrersAPI(t, n, repo, image.Digest, sigDesc.Digest)
}

// checkReferrersAPI asks the registry's referrers API directly. meshreg
// must serve it (and oras must then not have needed the tag fallback); an
// external registry without it is only reported.
func checkReferrersAPI(t *testing.T, n *testnet.Node, repo string, subject, referrer digest.Digest) {
	t.Helper()
	c := testnet.NewClient(n.URL())
	status, hdr, body, err := c.Get(t.Context(), "/v2/"+repo+"/referrers/"+subject.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	fallbackTag := strings.Replace(subject.String(), ":", "-", 1)
	if status == http.StatusNotFound && n.External() {
		t.Logf("GET /v2/%s/referrers/%s: 404; this registry has no referrers API (oras used the %s tag)", repo, subject, fallbackTag)
		return
	}
	if status != http.StatusOK {
		t.Errorf("GET /v2/%s/referrers/%s: status %d, want 200; body: %s", repo, subject, status, body)
		return
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Errorf("GET referrers: %v\n%s", err, body)
		return
	}
	if ct := hdr.Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
		t.Errorf("GET referrers: Content-Type %q, want %q", ct, ocispec.MediaTypeImageIndex)
	}
	if !slices.ContainsFunc(idx.Manifests, func(d ocispec.Descriptor) bool {
		return d.Digest == referrer && d.ArtifactType == orasSigType
	}) {
		t.Errorf("GET referrers of %s does not list %s with artifactType %s:\n%s", subject, referrer, orasSigType, body)
	}
	_, _, tags, err := c.Get(t.Context(), "/v2/"+repo+"/tags/list", nil)
	if err == nil && bytes.Contains(tags, []byte(fallbackTag)) {
		t.Errorf("tag %s exists: oras fell back to the referrers tag schema although the API is served; tags: %s", fallbackTag, tags)
	}
}

func hasReferrer(t orasTree, d digest.Digest, artifactType string) bool {
	for _, r := range t.Referrers {
		if r.Digest == d && (artifactType == "" || r.ArtifactType == artifactType) {
			return true
		}
		if hasReferrer(r, d, artifactType) {
			return true
		}
	}
	return false
}

func orasJSON(t *testing.T, out []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(out, v); err != nil {
		t.Fatalf("oras printed no JSON (%v):\n%s", err, out)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
