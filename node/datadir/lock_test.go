package datadir

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockExcludesSecondHolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Acquire of a held data dir: %v; want ErrInUse", err)
	}
	want := fmt.Sprintf("data dir %s is in use by another meshreg (pid %d on ", dir, os.Getpid())
	if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, "started ") ||
		!strings.Contains(msg, "stop it or pass another --data-dir") {
		t.Errorf("error %q does not name the holder (want %q…) and what to do", msg, want)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	again, err := Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Close: %v", err)
	}
	defer again.Close()
	b, err := os.ReadFile(filepath.Join(dir, LockFile))
	if err != nil || !strings.Contains(string(b), fmt.Sprintf(`"pid":%d`, os.Getpid())) {
		t.Errorf("lock file holds %q (err %v); want this process's pid", b, err)
	}
}

func TestLockUnknownHolder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// A holder caught between flock and writing itself.
	if err := os.Truncate(filepath.Join(dir, LockFile), 0); err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "(holder unknown)") {
		t.Errorf("Acquire with an empty lock file held: %v; want ErrInUse naming an unknown holder", err)
	}
}

func TestLockMissingDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "absent")
	if _, err := Acquire(dir); err == nil {
		t.Fatal("Acquire of a missing dir succeeded")
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Acquire created %s (stat: %v); it must not", dir, err)
	}
}
