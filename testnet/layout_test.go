package testnet_test

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// TestExportImportLayout: `meshreg export` of an index (two images) from
// one node writes an OCI image layout tar that oras reads, and `meshreg
// import` pushes it into another repository of another node: the same
// digests through crane, every blob back.
func TestExportImportLayout(t *testing.T) {
	t.Parallel()
	src := testnet.StartNode(t, testnet.Options{})
	dst := testnet.StartNode(t, testnet.Options{})
	bin := testnet.Binary(t)
	crane, oras := testnet.Tool(t, "crane"), testnet.Tool(t, "oras")
	work := t.TempDir()
	cr := testnet.Runner{T: t, Path: crane, Dir: work}
	repo := testnet.UniqueRepo("e2e/export")

	var children []digest.Digest
	for i, layers := range []int{2, 1} {
		tag := fmt.Sprintf("img%d", i)
		args := []string{"append", "--insecure", "--oci-empty-base", "-t", src.Host() + "/" + repo + ":" + tag}
		for j := range layers {
			path := filepath.Join(work, fmt.Sprintf("%s-%d.tar", tag, j))
			// The first layer is above 1 MiB: imported with --chunk-size
			// 1MiB, it goes up in PATCH chunks.
			size := 96 << 10
			if i == 0 && j == 0 {
				size = 600 << 10
			}
			if _, err := testnet.WriteLayerTar(path, tag, 3, size); err != nil {
				t.Fatal(err)
			}
			args = append(args, "-f", path)
		}
		cr.Run(args...)
		children = append(children, craneDigest(cr, src.Host()+"/"+repo+":"+tag))
	}
	cr.Run("index", "append", "--insecure", "-m", src.Host()+"/"+repo+"@"+children[0].String(),
		"-m", src.Host()+"/"+repo+"@"+children[1].String(), "-t", src.Host()+"/"+repo+":multi")
	want := craneDigest(cr, src.Host()+"/"+repo+":multi")

	layout := filepath.Join(work, "layout.tar")
	mr := testnet.Runner{T: t, Path: bin, Dir: work}
	mr.Run("export", repo+":multi", "--node", src.URL(), "--out", layout)

	// The layout: oci-layout, index.json naming the tag, every blob.
	files := layoutFiles(t, layout)
	if _, ok := files["oci-layout"]; !ok {
		t.Errorf("no oci-layout in the export: %v", keys(files))
	}
	var index ocispec.Index
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json: %v\n%s", err, files["index.json"])
	}
	if top := index.Manifests[0]; top.Digest != want || top.Annotations[ocispec.AnnotationRefName] != "multi" || top.MediaType != ocispec.MediaTypeImageIndex {
		t.Errorf("index.json names %+v, want %s tagged multi", top, want)
	}
	for name, b := range files {
		if enc, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && digest.FromBytes(b).Encoded() != enc {
			t.Errorf("%s does not match its name", name)
		}
	}
	big := 0
	for name, b := range files {
		if len(b) > 1<<20 {
			big++
		} else if name == "" {
			t.Error("an entry without a name")
		}
	}
	if big == 0 {
		t.Error("no blob above 1 MiB: the chunked upload goes untested")
	}
	for _, d := range children {
		if _, ok := files["blobs/sha256/"+d.Encoded()]; !ok {
			t.Errorf("child manifest %s is not in the layout", d)
		}
	}

	// Import into another repository of another node.
	repo2 := testnet.UniqueRepo("e2e/imported")
	out := mr.Run("import", layout, "--node", dst.URL(), "--repo", repo2, "--chunk-size", "1MiB")
	if !strings.Contains(string(out), repo2+":multi@"+want.String()) {
		t.Errorf("import printed %q", out)
	}
	if got := craneDigest(cr, dst.Host()+"/"+repo2+":multi"); got != want {
		t.Errorf("imported multi = %s, want %s", got, want)
	}
	for _, d := range children {
		mb := cr.Run("manifest", "--insecure", dst.Host()+"/"+repo2+"@"+d.String())
		var m ocispec.Manifest
		if err := json.Unmarshal(mb, &m); err != nil {
			t.Fatal(err)
		}
		for _, b := range append(m.Layers, m.Config) {
			got := cr.Try("blob", "--insecure", dst.Host()+"/"+repo2+"@"+b.Digest.String())
			if got.Err != nil || digest.FromBytes(got.Stdout) != b.Digest {
				t.Errorf("imported blob %s: %v", b.Digest, got.Err)
			}
		}
	}
	// Importing again is a no-op that succeeds (blobs exist).
	mr.Run("import", layout, "--node", dst.URL(), "--repo", repo2)

	// oras reads the exported layout tar and copies it on its own.
	repo3 := testnet.UniqueRepo("e2e/oras-from-layout")
	or := testnet.Runner{T: t, Path: oras, Dir: work}
	or.Run("cp", "--no-tty", "--from-oci-layout", layout+":multi", "--to-plain-http", dst.Host()+"/"+repo3+":multi")
	if got := craneDigest(cr, dst.Host()+"/"+repo3+":multi"); got != want {
		t.Errorf("oras cp from the layout = %s, want %s", got, want)
	}

	// A layout with a corrupted blob is refused before the registry
	// commits it.
	bad := filepath.Join(work, "bad.tar")
	corruptLayoutBlob(t, layout, bad)
	res := mr.Try("import", bad, "--node", dst.URL(), "--repo", testnet.UniqueRepo("e2e/bad"))
	if res.Err == nil || !strings.Contains(string(res.Stderr), "does not match its digest") {
		t.Errorf("import of a corrupted layout: %v\n%s", res.Err, res.Stderr)
	}
}

func layoutFiles(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	out := map[string][]byte{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = b
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// corruptLayoutBlob copies a layout tar, flipping a byte in its largest
// blob (a layer).
func corruptLayoutBlob(t *testing.T, from, to string) {
	t.Helper()
	files := layoutFiles(t, from)
	largest := ""
	for name, b := range files {
		if strings.HasPrefix(name, "blobs/") && (largest == "" || len(b) > len(files[largest])) {
			largest = name
		}
	}
	files[largest][len(files[largest])/2] ^= 1
	f, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for name, b := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Size: int64(len(b)), Mode: 0o644, Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write(b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}
