package blobstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// flipByte changes one byte of blob d's file in place, as bit rot would.
func flipByte(t *testing.T, s *Store, d digest.Digest, off int64) {
	t.Helper()
	f, err := os.OpenFile(s.blobPath(d), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

type corruptLog struct {
	mu sync.Mutex
	ds []digest.Digest
}

func (c *corruptLog) add(d digest.Digest, _ int64, _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ds = append(c.ds, d)
}

func (c *corruptLog) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ds)
}

func putRandom(t *testing.T, s *Store, size int) ([]byte, digest.Digest) {
	t.Helper()
	data := randomBytes(size)
	d := digest.FromBytes(data)
	if _, err := s.Put(d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return data, d
}

func quarantineFiles(t *testing.T, s *Store) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.root, "quarantine"))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func TestOpenVerifiedCutsCorruptBlobShort(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reopen bool // a restarted store: nothing verified yet
		flipAt int64
	}{
		{"first byte, after restart", true, 0},
		{"last byte, after restart", true, 3<<20 - 1},
		{"middle byte, same process", false, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			s, err := Open(root, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, d := putRandom(t, s, 3<<20)
			if tc.reopen {
				if s, err = Open(root, nil); err != nil {
					t.Fatal(err)
				}
			}
			var log corruptLog
			s.OnCorrupt(log.add)
			flipByte(t, s, d, tc.flipAt)
			r, size, err := s.OpenVerified(d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.Copy(io.Discard, struct{ io.Reader }{r}) // 32 KiB reads, like net/http
			r.Close()
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("reading a corrupt blob: err = %v, want ErrCorrupt", err)
			}
			if got >= size {
				t.Fatalf("the reader returned %d of %d bytes of a corrupt blob: it must stop before the end", got, size)
			}
			if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
				t.Fatalf("corrupt blob still in blobs/: Stat err = %v", err)
			}
			if n := quarantineFiles(t, s); n != 1 {
				t.Fatalf("%d files in quarantine, want 1", n)
			}
			if log.count() != 1 || s.Quarantined() != 1 {
				t.Fatalf("OnCorrupt called %d times, Quarantined() = %d; want 1 and 1", log.count(), s.Quarantined())
			}
			if blobs, _ := s.Stats(); blobs != 0 {
				t.Fatalf("Stats count %d blobs after the quarantine, want 0", blobs)
			}
		})
	}
}

func TestOpenVerifiedRangeOfCorruptBlob(t *testing.T) {
	root := t.TempDir()
	s, _ := Open(root, nil)
	_, d := putRandom(t, s, 2<<20)
	s, _ = Open(root, nil)
	flipByte(t, s, d, 2<<20-1) // outside the range asked for
	r, _, err := s.OpenVerified(d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Seek(100, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	n, err := r.Read(make([]byte, 1000))
	if n != 0 || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("range read of a corrupt blob: %d bytes, err %v; want 0 and ErrCorrupt", n, err)
	}
}

func TestOpenVerifiedGoodBlob(t *testing.T) {
	root := t.TempDir()
	s, _ := Open(root, nil)
	data, d := putRandom(t, s, 3<<20+17)
	// Committed by this store: verified, so served as the file itself.
	r, _, err := s.OpenVerified(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(*os.File); !ok {
		t.Fatalf("a blob verified at commit is served through %T, want *os.File (sendfile)", r)
	}
	r.Close()

	s, _ = Open(root, nil) // restarted: not verified yet
	r, _, err = s.OpenVerified(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(*os.File); ok {
		t.Fatal("an unverified blob is served as a plain file")
	}
	if _, err := r.Seek(5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(got, data[5:]) {
		t.Fatalf("range read of a good blob: err %v, %d bytes, equal %v", err, len(got), bytes.Equal(got, data[5:]))
	}
	r, _, _ = s.OpenVerified(d)
	if _, ok := r.(*os.File); !ok {
		t.Fatalf("a blob verified by a read is served through %T afterwards, want *os.File", r)
	}
	r.Close()
}

func TestVerifyFindsRotWithoutAStampChange(t *testing.T) {
	root := t.TempDir()
	s, _ := Open(root, nil)
	_, d := putRandom(t, s, 1<<20)
	_, keep := putRandom(t, s, 1<<20+1)
	fi, _ := os.Stat(s.blobPath(d))
	flipByte(t, s, d, 7)
	// Put the mtime back, as rot below the filesystem would leave it.
	if err := os.Chtimes(s.blobPath(d), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if s.Held(d) {
		t.Fatal("Held counts a file changed since it was verified")
	}
	s, _ = Open(root, nil) // no stamps: only a forced hash can tell
	var log corruptLog
	s.OnCorrupt(log.add)
	if !s.Held(d) {
		t.Fatal("Held: an unverified file should count until Verify settles it")
	}
	calls := 0
	throttle := func(int) error { calls++; return nil }
	if err := s.Verify(context.Background(), keep, true, throttle); err != nil {
		t.Fatalf("verify a good blob: %v", err)
	}
	if calls == 0 {
		t.Fatal("Verify did not call the throttle")
	}
	if err := s.Verify(context.Background(), d, true, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("verify a rotten blob: %v, want ErrCorrupt", err)
	}
	if log.count() != 1 || quarantineFiles(t, s) != 1 || s.Held(d) {
		t.Fatalf("after Verify found rot: %d reports, %d quarantined files, held %v", log.count(), quarantineFiles(t, s), s.Held(d))
	}
	if err := s.Verify(context.Background(), d, true, nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("verify a quarantined blob: %v, want ErrNotFound", err)
	}
}

func TestPutReplacesUnverifiedCopy(t *testing.T) {
	root := t.TempDir()
	s, _ := Open(root, nil)
	data, d := putRandom(t, s, 1<<20)
	flipByte(t, s, d, 99)
	s, _ = Open(root, nil)
	if _, err := s.Put(d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(s.blobPath(d))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a push over an unverified copy left wrong bytes (err %v)", err)
	}
	if blobs, bytes := s.Stats(); blobs != 1 || bytes != int64(len(data)) {
		t.Fatalf("Stats = %d blobs, %d bytes; want 1, %d", blobs, bytes, len(data))
	}
}

func TestOpenVerifiedTruncatedToNothing(t *testing.T) {
	root := t.TempDir()
	s, _ := Open(root, nil)
	_, d := putRandom(t, s, 1<<20)
	if err := os.Truncate(s.blobPath(d), 0); err != nil {
		t.Fatal(err)
	}
	r, size, err := s.OpenVerified(d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadAll(r); size != 0 || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a blob truncated to 0 bytes read as size %d, err %v; want ErrCorrupt", size, err)
	}
}
