package testnet

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestExportRevision(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := ExportRevision(t.Context(), "HEAD", dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"go.mod", "deploy/Dockerfile", "cmd/meshreg/main.go"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the exported tree lacks %s: %v", f, err)
		}
	}
	// A revision the clone does not have fails with a way out, never silently.
	err := ExportRevision(t.Context(), "0123456789abcdef0123456789abcdef01234567", t.TempDir())
	if !errors.Is(err, ErrRevisionMissing) {
		t.Fatalf("a missing revision: error %v, want ErrRevisionMissing", err)
	}
}
