package blobstore

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

func newUpload(t *testing.T, s *Store) *Upload {
	t.Helper()
	u, err := s.NewUpload()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func appendAll(t *testing.T, u *Upload, chunks ...[]byte) {
	t.Helper()
	for _, c := range chunks {
		if n, err := u.Append(bytes.NewReader(c)); err != nil || n != int64(len(c)) {
			t.Fatalf("Append(%d bytes) = %d, %v", len(c), n, err)
		}
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestUploadChunksCommit(t *testing.T) {
	t.Parallel()
	data := randomBytes(5*bufSize + 321)
	tests := []struct {
		name   string
		alg    digest.Algorithm
		splits []int // chunk boundaries
	}{
		{"sha256/one-chunk", digest.SHA256, nil},
		{"sha256/chunks", digest.SHA256, []int{1, 1000, bufSize, 3*bufSize + 1}},
		{"sha256/empty-chunks", digest.SHA256, []int{0, 0, 10, 10}},
		{"sha512/chunks", digest.SHA512, []int{7, 2 * bufSize}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, t.TempDir())
			u := newUpload(t, s)
			if !validID(u.ID()) {
				t.Fatalf("ID() = %q: not 32 lowercase hex", u.ID())
			}
			if got, err := s.Upload(u.ID()); got != u || err != nil {
				t.Fatalf("Upload(ID()) = %p, %v; want %p", got, err, u)
			}
			prev := 0
			for _, at := range append(tt.splits, len(data)) {
				appendAll(t, u, data[prev:at])
				prev = at
				if u.Size() != int64(at) {
					t.Fatalf("Size() = %d; want %d", u.Size(), at)
				}
			}
			d := tt.alg.FromBytes(data)
			if n, err := u.Commit(d); err != nil || n != int64(len(data)) {
				t.Fatalf("Commit = %d, %v; want %d, nil", n, err, len(data))
			}
			assertContent(t, s, d, data)
			assertStats(t, s, 1, int64(len(data)))
			assertNoTempFiles(t, s.root)
			if _, err := s.Upload(u.ID()); !errors.Is(err, ErrUploadNotFound) {
				t.Errorf("Upload after Commit: %v; want ErrUploadNotFound", err)
			}
			if _, err := u.Append(strings.NewReader("more")); !errors.Is(err, ErrUploadNotFound) {
				t.Errorf("Append after Commit: %v; want ErrUploadNotFound", err)
			}
			if _, err := u.Commit(d); !errors.Is(err, ErrUploadNotFound) {
				t.Errorf("second Commit: %v; want ErrUploadNotFound", err)
			}
		})
	}
}

func TestUploadAppendRollback(t *testing.T) {
	t.Parallel()
	data := randomBytes(4*bufSize + 99)
	first, rest := data[:bufSize+5], data[bufSize+5:]
	tests := []struct {
		name string
		r    io.Reader
		err  error
	}{
		{"fails-at-once", errReader{errClient}, errClient},
		{"fails-after-a-few-bytes", io.MultiReader(bytes.NewReader(rest[:10]), errReader{errClient}), errClient},
		{"fails-after-buffers", io.MultiReader(bytes.NewReader(rest[:2*bufSize+1]), errReader{errClient}), errClient},
		{"truncated-body", io.MultiReader(bytes.NewReader(rest[:bufSize]), errReader{io.ErrUnexpectedEOF}), io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, t.TempDir())
			u := newUpload(t, s)
			appendAll(t, u, first)

			n, err := u.Append(tt.r)
			if !errors.Is(err, tt.err) || n != 0 {
				t.Fatalf("Append = %d, %v; want 0, %v", n, err, tt.err)
			}
			if u.Size() != int64(len(first)) {
				t.Errorf("Size() after failed Append = %d; want %d", u.Size(), len(first))
			}
			if got := fileSize(t, u.path); got != int64(len(first)) {
				t.Errorf("file size after failed Append = %d; want %d", got, len(first))
			}
			// The client retries the chunk; the hash must not include the failed bytes.
			appendAll(t, u, rest)
			d := digest.FromBytes(data)
			if _, err := u.Commit(d); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			assertContent(t, s, d, data)
		})
	}
}

func TestUploadCommitMismatchKeepsUpload(t *testing.T) {
	t.Parallel()
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		t.Run(string(alg), func(t *testing.T) {
			t.Parallel()
			s := newStore(t, t.TempDir())
			u := newUpload(t, s)
			data := randomBytes(3000)
			appendAll(t, u, data[:1000])

			if _, err := u.Commit(alg.FromBytes(data)); !errors.Is(err, ErrDigestMismatch) {
				t.Fatalf("early Commit: %v; want ErrDigestMismatch", err)
			}
			if got, err := s.Upload(u.ID()); got != u || err != nil {
				t.Fatalf("Upload after failed Commit = %p, %v; want the session", got, err)
			}
			if u.Size() != 1000 {
				t.Errorf("Size() = %d; want 1000", u.Size())
			}
			assertStats(t, s, 0, 0)

			appendAll(t, u, data[1000:])
			if _, err := u.Commit(alg.FromBytes(data)); err != nil {
				t.Fatalf("Commit: %v", err)
			}
			assertContent(t, s, alg.FromBytes(data), data)
		})
	}
}

func TestUploadCommitExistingBlob(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	data := randomBytes(777)
	d := digest.FromBytes(data)
	if _, err := s.Put(d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	u := newUpload(t, s)
	appendAll(t, u, data)
	if _, err := u.Commit(d); err != nil {
		t.Fatalf("Commit of a stored blob: %v", err)
	}
	assertStats(t, s, 1, int64(len(data)))
	assertNoTempFiles(t, s.root)
}

func TestUploadCancel(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	u := newUpload(t, s)
	appendAll(t, u, []byte("some bytes"))
	if err := u.Cancel(); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	assertNoTempFiles(t, s.root)
	if _, err := s.Upload(u.ID()); !errors.Is(err, ErrUploadNotFound) {
		t.Errorf("Upload after Cancel: %v; want ErrUploadNotFound", err)
	}
	if err := u.Cancel(); !errors.Is(err, ErrUploadNotFound) {
		t.Errorf("second Cancel: %v; want ErrUploadNotFound", err)
	}
	if _, err := u.Append(strings.NewReader("x")); !errors.Is(err, ErrUploadNotFound) {
		t.Errorf("Append after Cancel: %v; want ErrUploadNotFound", err)
	}
}

func TestUploadBadIDs(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	u := newUpload(t, s)
	// A file named like a bad id must not be reachable either.
	if err := os.WriteFile(filepath.Join(s.root, "uploads", "put-1"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	id := u.ID()
	for _, bad := range []string{
		"", "../x", "put-1", "../uploads/" + id, id[:31], id + "0", id[:31] + "/",
		strings.ToUpper(id), id[:30] + "..", id[:31] + "g", id[:31] + "\x00",
		"00000000000000000000000000000000", // well-formed, unknown
	} {
		if _, err := s.Upload(bad); !errors.Is(err, ErrUploadNotFound) {
			t.Errorf("Upload(%q) = %v; want ErrUploadNotFound", bad, err)
		}
	}
}

func TestExpireUploads(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, t.TempDir())
		idle, busy, looked := newUpload(t, s), newUpload(t, s), newUpload(t, s)
		time.Sleep(time.Minute)
		appendAll(t, busy, []byte("still going"))
		if _, err := s.Upload(looked.ID()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)

		if n := s.ExpireUploads(90 * time.Second); n != 1 {
			t.Errorf("ExpireUploads(90s) = %d; want 1", n)
		}
		if _, err := s.Upload(idle.ID()); !errors.Is(err, ErrUploadNotFound) {
			t.Errorf("idle upload: %v; want ErrUploadNotFound", err)
		}
		if _, err := os.Stat(idle.path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("idle upload's file: %v; want it removed", err)
		}
		for _, u := range []*Upload{busy, looked} {
			if _, err := s.Upload(u.ID()); err != nil {
				t.Errorf("active upload %s: %v", u.ID(), err)
			}
		}
		if n := s.ExpireUploads(0); n != 0 { // Upload() above touched them: no time passed
			t.Errorf("ExpireUploads(0) right after use = %d; want 0", n)
		}
		time.Sleep(time.Second)
		if n := s.ExpireUploads(0); n != 2 {
			t.Errorf("ExpireUploads(0) = %d; want 2", n)
		}
		assertNoTempFiles(t, s.root)
	})
}
