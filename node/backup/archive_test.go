package backup

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

type blob struct {
	d digest.Digest
	b []byte
}

func testArchive(t *testing.T, blobs ...blob) []byte {
	t.Helper()
	meta := []byte("meshreg-fsm-snapshot-v1\nsome state")
	sum := sha256.Sum256(meta)
	m := Manifest{NodeID: "12D3Koo", Version: "test", Index: 42, Term: 3, MetadataSize: int64(len(meta)),
		MetadataSHA256: hex.EncodeToString(sum[:]), WithBlobs: len(blobs) > 0, Blobs: len(blobs)}
	for _, b := range blobs {
		m.BlobBytes += int64(len(b.b))
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteManifest(m); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMetadata(int64(len(meta)), bytes.NewReader(meta)); err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		if err := w.WriteBlob(b.d, int64(len(b.b)), bytes.NewReader(b.b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mkBlob(s string) blob { return blob{digest.FromString(s), []byte(s)} }

// readAll reads an archive with a visitor that consumes everything, and
// returns what it saw.
func readAll(r io.Reader) (Manifest, string, map[digest.Digest]string, error) {
	var meta string
	got := map[digest.Digest]string{}
	m, err := Read(r, Visitor{
		Metadata: func(_ Manifest, r io.Reader) error {
			b, err := io.ReadAll(r)
			meta = string(b)
			return err
		},
		Blob: func(d digest.Digest, _ int64, r io.Reader) error {
			b, err := io.ReadAll(r)
			got[d] = string(b)
			return err
		},
	})
	return m, meta, got, err
}

func TestArchiveRoundTrip(t *testing.T) {
	a, b := mkBlob("layer a"), mkBlob("config b")
	m, meta, got, err := readAll(bytes.NewReader(testArchive(t, a, b)))
	if err != nil {
		t.Fatal(err)
	}
	if m.Index != 42 || m.Term != 3 || m.NodeID != "12D3Koo" || m.Blobs != 2 || m.Format != FormatVersion {
		t.Errorf("manifest = %+v", m)
	}
	if meta != "meshreg-fsm-snapshot-v1\nsome state" {
		t.Errorf("metadata = %q", meta)
	}
	if got[a.d] != "layer a" || got[b.d] != "config b" || len(got) != 2 {
		t.Errorf("blobs = %v", got)
	}
	// Metadata only.
	if _, _, got, err := readAll(bytes.NewReader(testArchive(t))); err != nil || len(got) != 0 {
		t.Fatalf("metadata-only archive: %v, %d blobs", err, len(got))
	}
}

// A visitor that reads nothing still gets every check.
func TestArchiveVisitorNeedNotRead(t *testing.T) {
	arch := testArchive(t, mkBlob("x"))
	if _, err := Read(bytes.NewReader(arch), Visitor{}); err != nil {
		t.Fatal(err)
	}
	arch[len(arch)-3000] ^= 1 // in the blob or the trailer region: some check must see it
	if _, err := Read(bytes.NewReader(arch), Visitor{}); err == nil {
		t.Fatal("a flipped byte went unnoticed")
	}
}

func TestArchiveTruncated(t *testing.T) {
	arch := testArchive(t, mkBlob(strings.Repeat("a", 5000)), mkBlob("b"))
	// Every cut short of the whole archive is refused: the trailer is last.
	end := bytes.Index(arch, []byte(`{"sha256":"`)) + 40 // inside the trailer's content
	for _, n := range []int{0, 100, 512, 1500, 3000, 6000, end - 600, end} {
		_, _, _, err := readAll(bytes.NewReader(arch[:n]))
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("cut at %d of %d: err = %v, want ErrCorrupt", n, len(arch), err)
		}
	}
}

func TestArchiveCorrupted(t *testing.T) {
	a := mkBlob(strings.Repeat("a", 5000))
	arch := testArchive(t, a)
	i := bytes.Index(arch, []byte("aaaa"))
	for name, mutate := range map[string]func([]byte){
		"blob byte":     func(b []byte) { b[i+10] = 'b' },
		"metadata byte": func(b []byte) { b[bytes.Index(b, []byte("some state"))] = 'S' },
		"trailer sum": func(b []byte) {
			j := bytes.Index(b, []byte(`{"sha256":"`)) + len(`{"sha256":"`)
			b[j] ^= 1
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := bytes.Clone(arch)
			mutate(b)
			_, _, _, err := readAll(bytes.NewReader(b))
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

// hostile writes a tar by hand: entries a meshreg writer never makes.
func hostile(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	// A valid manifest and metadata first, so the reader gets to the
	// hostile entry.
	good := testArchive(t)
	tr := tar.NewReader(bytes.NewReader(good))
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for range 2 {
		hdr, err := tr.Next()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		_ = tw.WriteHeader(hdr)
		_, _ = tw.Write(b)
	}
	for _, h := range entries {
		if h.Typeflag == tar.TypeXHeader {
			// Go's writer makes no such header: write it as a regular
			// entry, then turn its type into a PAX header.
			_ = tw.Flush()
			at := buf.Len()
			_ = tw.WriteHeader(&tar.Header{Name: h.Name, Typeflag: tar.TypeReg, Size: h.Size, Format: tar.FormatUSTAR})
			_, _ = tw.Write(bytes.Repeat([]byte("9"), int(h.Size)))
			_ = tw.Flush()
			blk := buf.Bytes()[at : at+512]
			blk[156] = tar.TypeXHeader
			copy(blk[148:156], "        ")
			var sum int
			for _, c := range blk {
				sum += int(c)
			}
			copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write(make([]byte, h.Size))
		}
	}
	_ = tw.Close()
	return buf.Bytes()
}

func TestArchiveHostileEntries(t *testing.T) {
	hex64 := "sha256/" + strings.Repeat("0", 64)
	for name, h := range map[string]*tar.Header{
		"path traversal":     {Name: "../../etc/passwd", Typeflag: tar.TypeReg, Size: 1},
		"traversal in blobs": {Name: BlobPrefix + "sha256/../../x", Typeflag: tar.TypeReg, Size: 1},
		"absolute":           {Name: "/" + BlobPrefix + hex64, Typeflag: tar.TypeReg, Size: 1},
		"symlink":            {Name: BlobPrefix + hex64, Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"},
		"hard link":          {Name: BlobPrefix + hex64, Typeflag: tar.TypeLink, Linkname: MetadataName},
		"directory":          {Name: "blobs/", Typeflag: tar.TypeDir},
		"unexpected name":    {Name: "README", Typeflag: tar.TypeReg, Size: 3},
		"bad digest":         {Name: BlobPrefix + "sha256/xyz", Typeflag: tar.TypeReg, Size: 1},
		"unknown algorithm":  {Name: BlobPrefix + "md5/" + strings.Repeat("0", 32), Typeflag: tar.TypeReg, Size: 1},
		"blob not announced": {Name: BlobPrefix + hex64, Typeflag: tar.TypeReg, Size: 1},
		"second manifest":    {Name: ManifestName, Typeflag: tar.TypeReg, Size: 2},
		"oversized header":   {Name: "pax", Typeflag: tar.TypeXHeader, Size: 2 << 20},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, _, err := readAll(bytes.NewReader(hostile(t, h)))
			t.Log(err)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestArchiveHostileManifest(t *testing.T) {
	for name, m := range map[string]string{
		"not json":        "{",
		"future format":   `{"format":99,"metadata_size":10,"raft_index":1}`,
		"huge metadata":   `{"format":1,"metadata_size":99999999999999,"raft_index":1}`,
		"negative counts": `{"format":1,"metadata_size":10,"raft_index":1,"blobs":-1}`,
		"no index":        `{"format":1,"metadata_size":10}`,
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			_ = tw.WriteHeader(&tar.Header{Name: ManifestName, Typeflag: tar.TypeReg, Size: int64(len(m))})
			_, _ = tw.Write([]byte(m))
			_ = tw.Close()
			_, _, _, err := readAll(&buf)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
	// A huge manifest entry is refused by its header, before any read.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: ManifestName, Typeflag: tar.TypeReg, Size: 1 << 40})
	if _, err := Read(&buf, Visitor{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("err = %v, want the manifest size limit", err)
	}
}

func TestWriterRefusesBadBlob(t *testing.T) {
	w := NewWriter(io.Discard)
	_ = w.WriteManifest(Manifest{Index: 1, MetadataSize: 1})
	_ = w.WriteMetadata(1, strings.NewReader("x"))
	if err := w.WriteBlob(digest.FromString("a"), 1, strings.NewReader("b")); err == nil {
		t.Fatal("a blob whose bytes do not match its digest was written")
	}
	if err := w.WriteBlob(digest.FromString("abc"), 3, strings.NewReader("ab")); err == nil {
		t.Fatal("a short blob was written")
	}
}
