package auth

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func watchString(t *testing.T, contents string) (*Watched[string], string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte(contents), 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := Watch(path, func(b []byte) (string, error) { return string(b), nil })
	if err != nil {
		t.Fatal(err)
	}
	return w, path
}

// rewrite replaces the file's contents and gives it modification time mod.
func rewrite(t *testing.T, path, contents string, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(contents), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// TestWatchedSeesAChangeOfTheSameSizeAndTime: a policy edited twice within
// one tick of the file system's clock keeps its size and modification
// time (allow: [pull] → allow: [push]); the change still takes effect.
func TestWatchedSeesAChangeOfTheSameSizeAndTime(t *testing.T) {
	w, path := watchString(t, "allow: [pull]\n")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	rewrite(t, path, "allow: [push]\n", fi.ModTime())
	later := time.Now().Add(2 * ReloadInterval)
	w.now = func() time.Time { return later }
	if got := w.Get(); got != "allow: [push]\n" {
		t.Fatalf("after a same-size, same-time rewrite: %q, want the new contents", got)
	}
}

// TestWatchedWaitsForAFileBeingWritten: a file modified a moment ago may
// be half written (rewritten in place: truncated, then written); it is
// read once it has settled, so an htpasswd file caught empty does not
// lock everyone out until the next check.
func TestWatchedWaitsForAFileBeingWritten(t *testing.T) {
	w, path := watchString(t, "alice:hash\nbob:hash\n")
	now := time.Now().Add(2 * ReloadInterval)
	w.now = func() time.Time { return now }
	rewrite(t, path, "", now.Add(-settleTime/2)) // truncated, not yet written
	if got := w.Get(); got != "alice:hash\nbob:hash\n" {
		t.Fatalf("a file modified %v ago was read: %q", settleTime/2, got)
	}
	rewrite(t, path, "alice:hash\n", now.Add(-settleTime/2))
	now = now.Add(settleTime) // the next request, once it settled
	if got := w.Get(); got != "alice:hash\n" {
		t.Fatalf("the settled file: %q, want its contents", got)
	}
}
