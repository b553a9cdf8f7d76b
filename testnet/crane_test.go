package testnet_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/testnet"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestCraneRoundTrip pushes a random three-layer image with crane and
// checks, as a crane user would, that everything comes back bit for bit:
// digest, manifest, config, layers, a pulled OCI layout, a copy to a second
// repository, tags, listing, catalog and deletion.
func TestCraneRoundTrip(t *testing.T) {
	t.Parallel()
	n := testnet.StartNode(t, testnet.Options{})
	crane := testnet.Tool(t, "crane")
	work := t.TempDir()
	r := testnet.Runner{T: t, Path: crane, Dir: work}
	repo, repo2 := testnet.UniqueRepo("e2e/crane"), testnet.UniqueRepo("e2e/crane-copy")
	src, dst := n.Host()+"/"+repo+":v1", n.Host()+"/"+repo2+":v1"

	// Layers: uncompressed tarballs of random files; crane gzips them.
	var diffIDs []digest.Digest
	args := []string{"append", "--insecure", "--oci-empty-base", "-t", src}
	for i := range 3 {
		path := filepath.Join(work, fmt.Sprintf("layer%d.tar", i))
		d, err := testnet.WriteLayerTar(path, fmt.Sprintf("layer%d", i), 4, 256<<10)
		if err != nil {
			t.Fatal(err)
		}
		diffIDs = append(diffIDs, d)
		args = append(args, "-f", path)
	}
	out := strings.TrimSpace(string(r.Run(args...)))
	_, pushed, ok := strings.Cut(out, "@")
	if !ok {
		t.Fatalf("crane append printed %q, want REF@DIGEST", out)
	}
	want := digest.Digest(pushed)

	if got := craneDigest(r, src); got != want {
		t.Errorf("crane digest %s = %s, want the pushed %s", src, got, want)
	}

	// Manifest: served bytes hash to the digest; three layers.
	mb := r.Run("manifest", "--insecure", src)
	if got := digest.FromBytes(mb); got != want {
		t.Errorf("crane manifest %s: body hashes to %s, want %s", src, got, want)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, mb)
	}
	if len(m.Layers) != len(diffIDs) {
		t.Fatalf("manifest has %d layers, want %d:\n%s", len(m.Layers), len(diffIDs), mb)
	}

	// Config: its digest, and diff IDs equal to our tarballs' digests.
	cb := r.Run("blob", "--insecure", n.Host()+"/"+repo+"@"+m.Config.Digest.String())
	if got := digest.FromBytes(cb); got != m.Config.Digest {
		t.Errorf("config blob hashes to %s, want %s", got, m.Config.Digest)
	}
	var img ocispec.Image
	if err := json.Unmarshal(cb, &img); err != nil {
		t.Fatalf("config: %v\n%s", err, cb)
	}
	if !slices.Equal(img.RootFS.DiffIDs, diffIDs) {
		t.Errorf("config diff_ids = %v, want %v", img.RootFS.DiffIDs, diffIDs)
	}

	// Layers: each blob hashes to its descriptor and unpacks to our tarball.
	checkLayers := func(repo string) {
		t.Helper()
		for i, l := range m.Layers {
			b := r.Run("blob", "--insecure", n.Host()+"/"+repo+"@"+l.Digest.String())
			if got := digest.FromBytes(b); got != l.Digest || int64(len(b)) != l.Size {
				t.Errorf("%s layer %d: %d bytes hashing to %s, want %d bytes, %s", repo, i, len(b), got, l.Size, l.Digest)
				continue
			}
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Errorf("layer %d: %v", i, err)
				continue
			}
			raw, err := io.ReadAll(zr)
			if err != nil {
				t.Errorf("layer %d: gunzip: %v", i, err)
				continue
			}
			if got := digest.FromBytes(raw); got != diffIDs[i] {
				t.Errorf("%s layer %d unpacks to %s, want our tarball %s", repo, i, got, diffIDs[i])
			}
		}
	}
	checkLayers(repo)

	// crane pull into an OCI layout: every blob there hashes to its name.
	layout := filepath.Join(work, "pulled")
	r.Run("pull", "--insecure", "--format", "oci", src, layout)
	checkLayout(t, layout, want, m)

	// crane copy to a second repository of the same registry (blobs are
	// mounted from the first), then tag it.
	r.Run("copy", "--insecure", src, dst)
	if got := craneDigest(r, dst); got != want {
		t.Errorf("after crane copy, %s is %s, want %s", dst, got, want)
	}
	checkLayers(repo2)
	r.Run("tag", "--insecure", dst, "v2")
	if got := craneDigest(r, n.Host()+"/"+repo2+":v2"); got != want {
		t.Errorf("after crane tag, %s:v2 is %s, want %s", repo2, got, want)
	}
	if tags := lines(r.Run("ls", "--insecure", n.Host()+"/"+repo2)); !slices.Contains(tags, "v1") || !slices.Contains(tags, "v2") {
		t.Errorf("crane ls %s = %q, want v1 and v2", repo2, tags)
	}
	if repos := lines(r.Run("catalog", "--insecure", n.Host())); !slices.Contains(repos, repo) || !slices.Contains(repos, repo2) {
		t.Errorf("crane catalog lacks %s or %s: %q", repo, repo2, repos)
	}

	// crane delete the copy by digest: gone from repo2 with its tags, the
	// original untouched.
	r.Run("delete", "--insecure", n.Host()+"/"+repo2+"@"+want.String())
	if res := r.Try("digest", "--insecure", dst); res.Err == nil {
		t.Errorf("after crane delete, crane digest %s still answers %s", dst, bytes.TrimSpace(res.Stdout))
	} else if !bytes.Contains(res.Stderr, []byte("MANIFEST_UNKNOWN")) && !bytes.Contains(res.Stderr, []byte("404")) {
		t.Errorf("after crane delete, crane digest %s fails without MANIFEST_UNKNOWN/404: %s", dst, res.Stderr)
	}
	if res := r.Try("ls", "--insecure", n.Host()+"/"+repo2); res.Err == nil {
		if tags := lines(res.Stdout); slices.Contains(tags, "v1") || slices.Contains(tags, "v2") {
			t.Errorf("after deleting the manifest, crane ls %s still lists %q", repo2, tags)
		}
	}
	if got := craneDigest(r, src); got != want {
		t.Errorf("after deleting the copy, %s is %s, want %s", src, got, want)
	}
	checkLayers(repo)
}

func craneDigest(r testnet.Runner, ref string) digest.Digest {
	r.T.Helper()
	return digest.Digest(strings.TrimSpace(string(r.Run("digest", "--insecure", ref))))
}

func lines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// checkLayout checks an OCI image layout written by crane pull: the index
// names the manifest, and the manifest, config and layers are present and
// hash to their names.
func checkLayout(t *testing.T, dir string, manifest digest.Digest, m ocispec.Manifest) {
	t.Helper()
	ib, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatalf("pulled layout: %v", err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(ib, &idx); err != nil {
		t.Fatalf("pulled layout index.json: %v", err)
	}
	if !slices.ContainsFunc(idx.Manifests, func(d ocispec.Descriptor) bool { return d.Digest == manifest }) {
		t.Errorf("pulled layout index.json does not name %s:\n%s", manifest, ib)
	}
	need := []digest.Digest{manifest, m.Config.Digest}
	for _, l := range m.Layers {
		need = append(need, l.Digest)
	}
	for _, d := range need {
		b, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
		if err != nil {
			t.Errorf("pulled layout: %v", err)
			continue
		}
		if got := digest.FromBytes(b); got != d {
			t.Errorf("pulled layout: blob %s hashes to %s", d, got)
		}
	}
}
