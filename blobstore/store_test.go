package blobstore

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

func newStore(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(root, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	r.Read(b)
	return b
}

func assertStats(t *testing.T, s *Store, blobs, bytes int64) {
	t.Helper()
	if b, n := s.Stats(); b != blobs || n != bytes {
		t.Errorf("Stats() = %d blobs, %d bytes; want %d, %d", b, n, blobs, bytes)
	}
}

// assertNoTempFiles checks that nothing is left in root/uploads.
func assertNoTempFiles(t *testing.T, root string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("leftover temp file %s", e.Name())
	}
}

func assertContent(t *testing.T, s *Store, d digest.Digest, want []byte) {
	t.Helper()
	f, size, err := s.Open(d)
	if err != nil {
		t.Fatalf("Open(%s): %v", d, err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(want)) || !bytes.Equal(got, want) {
		t.Errorf("Open(%s): size %d, %d bytes read; want %d identical bytes", d, size, len(got), len(want))
	}
}

func TestPutOpenStatDelete(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		alg  digest.Algorithm
		size int
	}{
		{"sha256/empty", digest.SHA256, 0},
		{"sha256/small", digest.SHA256, 1000},
		{"sha256/several-buffers", digest.SHA256, 3*bufSize + 7},
		{"sha256/past-writeback", digest.SHA256, 9<<20 + 13},
		{"sha512/small", digest.SHA512, 1000},
		{"sha512/several-buffers", digest.SHA512, 3*bufSize + 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, t.TempDir())
			data := randomBytes(tt.size)
			d := tt.alg.FromBytes(data)

			n, err := s.Put(d, bytes.NewReader(data))
			if err != nil || n != int64(len(data)) {
				t.Fatalf("Put = %d, %v; want %d, nil", n, err, len(data))
			}
			if n, err := s.Stat(d); err != nil || n != int64(len(data)) {
				t.Fatalf("Stat = %d, %v; want %d, nil", n, err, len(data))
			}
			assertContent(t, s, d, data)
			assertStats(t, s, 1, int64(len(data)))
			assertNoTempFiles(t, s.root)

			if err := s.Delete(d); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			assertStats(t, s, 0, 0)
			if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat after Delete: %v; want ErrNotFound", err)
			}
			if _, _, err := s.Open(d); !errors.Is(err, ErrNotFound) {
				t.Errorf("Open after Delete: %v; want ErrNotFound", err)
			}
			if err := s.Delete(d); !errors.Is(err, ErrNotFound) {
				t.Errorf("second Delete: %v; want ErrNotFound", err)
			}
		})
	}
}

func TestPutFailureLeavesNothing(t *testing.T) {
	t.Parallel()
	data := randomBytes(2*bufSize + 5)
	d := digest.FromBytes(data)
	tests := []struct {
		name    string
		d       digest.Digest
		r       io.Reader
		wantErr error
	}{
		{"mismatch", digest.FromString("other"), bytes.NewReader(data), ErrDigestMismatch},
		{"mismatch/sha512", digest.SHA512.FromString("other"), bytes.NewReader(data), ErrDigestMismatch},
		{"short", d, bytes.NewReader(data[:len(data)-1]), ErrDigestMismatch},
		{"read-error", d, io.MultiReader(bytes.NewReader(data[:bufSize+3]), errReader{errClient}), errClient},
		{"truncated-body", d, io.MultiReader(bytes.NewReader(data[:10]), errReader{io.ErrUnexpectedEOF}), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, t.TempDir())
			if _, err := s.Put(tt.d, tt.r); !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put: %v; want %v", err, tt.wantErr)
			}
			if _, err := s.Stat(tt.d); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat: %v; want ErrNotFound", err)
			}
			assertStats(t, s, 0, 0)
			assertNoTempFiles(t, s.root)
		})
	}
}

func TestPutExistingBlob(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	data := randomBytes(5000)
	d := digest.FromBytes(data)
	for i := range 2 {
		if _, err := s.Put(d, bytes.NewReader(data)); err != nil {
			t.Fatalf("Put #%d: %v", i, err)
		}
	}
	// Present or not, the bytes are still verified.
	if _, err := s.Put(d, bytes.NewReader(data[1:])); !errors.Is(err, ErrDigestMismatch) {
		t.Errorf("Put of wrong bytes for a stored digest: %v; want ErrDigestMismatch", err)
	}
	assertContent(t, s, d, data)
	assertStats(t, s, 1, int64(len(data)))
	assertNoTempFiles(t, s.root)
}

func TestPutConcurrentSameBlob(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	data := randomBytes(3*bufSize + 11)
	d := digest.FromBytes(data)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.Put(d, bytes.NewReader(data))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put #%d: %v", i, err)
		}
	}
	assertContent(t, s, d, data)
	assertStats(t, s, 1, int64(len(data)))
	assertNoTempFiles(t, s.root)
}

func TestOpenRemovesLeftoversAndCounts(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newStore(t, root)
	blobs := [][]byte{randomBytes(100), randomBytes(200)}
	for _, b := range blobs {
		if _, err := s.Put(digest.SHA512.FromBytes(b), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	u, err := s.NewUpload()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Append(strings.NewReader("half a layer")); err != nil {
		t.Fatal(err)
	}
	// What a process killed mid-Put leaves behind, including odd names.
	for _, name := range []string{"put-123", "stray"} {
		if err := os.WriteFile(filepath.Join(root, "uploads", name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "uploads", "dir"), 0o700); err != nil {
		t.Fatal(err)
	}

	s2 := newStore(t, root) // a restart
	assertNoTempFiles(t, root)
	assertStats(t, s2, 2, 300)
	if _, err := s2.Upload(u.ID()); !errors.Is(err, ErrUploadNotFound) {
		t.Errorf("Upload(%s) after restart: %v; want ErrUploadNotFound", u.ID(), err)
	}
	for _, b := range blobs {
		assertContent(t, s2, digest.SHA512.FromBytes(b), b)
	}
}

func TestInvalidDigests(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "store")
	s := newStore(t, root)
	u, err := s.NewUpload()
	if err != nil {
		t.Fatal(err)
	}
	valid := digest.FromString("x").Encoded()
	tests := []struct {
		d    digest.Digest
		want error
	}{
		{"sha256:../../etc", digest.ErrDigestInvalidLength},
		{"sha256:../../" + digest.Digest(valid[6:]), digest.ErrDigestInvalidFormat},
		{"sha256:" + digest.Digest(strings.ToUpper(valid)), digest.ErrDigestInvalidFormat},
		{"sha256:" + digest.Digest(valid) + "/", digest.ErrDigestInvalidLength},
		{"../sha256:" + digest.Digest(valid), digest.ErrDigestInvalidFormat},
		{"", digest.ErrDigestInvalidFormat},
		{"sha256", digest.ErrDigestInvalidFormat},
		{"sha256:", digest.ErrDigestInvalidFormat},
		{digest.SHA384.FromString("x"), ErrUnsupportedAlgorithm},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", ErrUnsupportedAlgorithm},
		{"blake3:" + digest.Digest(valid), ErrUnsupportedAlgorithm},
	}
	for _, tt := range tests {
		calls := map[string]func() error{
			"Put":    func() error { _, err := s.Put(tt.d, strings.NewReader("x")); return err },
			"Stat":   func() error { _, err := s.Stat(tt.d); return err },
			"Open":   func() error { _, _, err := s.Open(tt.d); return err },
			"Delete": func() error { return s.Delete(tt.d) },
			"Commit": func() error { _, err := u.Commit(tt.d); return err },
		}
		for name, call := range calls {
			if err := call(); !errors.Is(err, tt.want) {
				t.Errorf("%s(%q) = %v; want %v", name, tt.d, err, tt.want)
			}
		}
	}
	// Nothing escaped the store's root, and the upload survived.
	if entries, _ := os.ReadDir(filepath.Dir(root)); len(entries) != 1 {
		t.Errorf("files next to the store root: %v", entries)
	}
	if _, err := s.Upload(u.ID()); err != nil {
		t.Errorf("upload after rejected commits: %v", err)
	}
}

var errClient = errors.New("client went away")

// errReader always fails with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
