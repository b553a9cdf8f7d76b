package blobstore

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"testing/synctest"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestUploadLimits(t *testing.T) {
	t.Parallel()
	s := newStore(t, t.TempDir())
	s.SetUploadLimits(UploadLimits{PerStore: 5, PerOwner: 2})

	a1, err := s.NewUploadFor("10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewUploadFor("10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewUploadFor("10.0.0.1"); !errors.Is(err, ErrTooManyUploads) {
		t.Fatalf("third session of one owner: %v; want ErrTooManyUploads", err)
	}
	// Another owner is not affected by the first one's limit.
	for range 2 {
		if _, err := s.NewUploadFor("10.0.0.2"); err != nil {
			t.Fatalf("other owner: %v", err)
		}
	}
	if _, err := s.NewUpload(); err != nil { // 5th: the store's last slot
		t.Fatal(err)
	}
	_, err = s.NewUploadFor("10.0.0.3")
	if !errors.Is(err, ErrTooManyUploads) {
		t.Fatalf("sixth session in the store: %v; want ErrTooManyUploads", err)
	}
	if got := s.OpenUploads(); got != 5 {
		t.Errorf("OpenUploads() = %d; want 5", got)
	}
	entries, _ := os.ReadDir(s.uploads)
	if len(entries) != 5 {
		t.Errorf("%d files in uploads/ after refused starts; want 5", len(entries))
	}

	// Ending a session gives its slot back, to the store and to its owner.
	data := []byte("a blob")
	appendAll(t, a1, data)
	if _, err := a1.Commit(digest.FromBytes(data)); err != nil {
		t.Fatal(err)
	}
	b, err := s.NewUploadFor("10.0.0.1")
	if err != nil {
		t.Fatalf("after a commit freed a slot: %v", err)
	}
	if _, err := s.NewUploadFor("10.0.0.1"); !errors.Is(err, ErrTooManyUploads) {
		t.Fatalf("owner back at its limit: %v; want ErrTooManyUploads", err)
	}
	if err := b.Cancel(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.NewUploadFor("10.0.0.1"); err != nil {
		t.Fatalf("after a cancel freed a slot: %v", err)
	}
}

func TestUploadLimitsFreedByExpiry(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, t.TempDir())
		s.SetUploadLimits(UploadLimits{PerStore: 10, PerOwner: 3})
		for range 3 {
			if _, err := s.NewUploadFor("client"); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.NewUploadFor("client"); !errors.Is(err, ErrTooManyUploads) {
			t.Fatalf("at the limit: %v; want ErrTooManyUploads", err)
		}
		time.Sleep(2 * time.Minute)
		if n := s.ExpireUploads(time.Minute); n != 3 {
			t.Fatalf("ExpireUploads = %d; want 3", n)
		}
		assertNoTempFiles(t, s.root)
		if _, err := s.NewUploadFor("client"); err != nil {
			t.Fatalf("after expiry: %v", err)
		}
	})
}

// countFDs returns how many file descriptors this process has open.
func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err) // not Linux
	}
	return len(entries)
}

// TestIdleUploadsHoldNoDescriptor is not parallel: it counts the process's
// descriptors, which parallel tests would change.
func TestIdleUploadsHoldNoDescriptor(t *testing.T) {
	s := newStore(t, t.TempDir())
	before := countFDs(t)
	var ups []*Upload
	for range 300 {
		u := newUpload(t, s)
		appendAll(t, u, []byte("first chunk"))
		ups = append(ups, u)
	}
	if grown := countFDs(t) - before; grown > 10 {
		t.Fatalf("300 idle upload sessions hold %d more descriptors; want none", grown)
	}
	// They still work: resume one and commit it.
	data := append([]byte("first chunk"), bytes.Repeat([]byte("x"), 3*bufSize)...)
	appendAll(t, ups[7], data[len("first chunk"):])
	if _, err := ups[7].Commit(digest.FromBytes(data)); err != nil {
		t.Fatal(err)
	}
	if _, err := ups[8].Commit(digest.SHA512.FromBytes([]byte("first chunk"))); err != nil {
		t.Fatalf("sha512 commit (re-reads the file): %v", err)
	}
	assertContent(t, s, digest.FromBytes(data), data)
}
