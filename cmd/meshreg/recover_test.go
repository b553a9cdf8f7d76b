package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/node/datadir"
)

func runRecover(t *testing.T, args ...string) error {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, io.Discard
	return app.Run(append([]string{"meshreg", "recover"}, args...))
}

// TestRecoverTakesDataDirLock: recover must not rewrite the Raft state of
// a data dir a running meshreg holds.
func TestRecoverTakesDataDirLock(t *testing.T) {
	clearMeshregEnv(t)
	dir := t.TempDir()
	held, err := datadir.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	err = runRecover(t, "--data-dir", dir)
	if !errors.Is(err, datadir.ErrInUse) || !strings.Contains(err.Error(), "is in use by another meshreg (pid ") {
		t.Fatalf("recover on a held data dir: %v; want it refused, naming the holder", err)
	}
}

// TestRecoverRefusesNewerFormat: recover must not rewrite a data dir
// written in a layout this binary does not read.
func TestRecoverRefusesNewerFormat(t *testing.T) {
	clearMeshregEnv(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, datadir.FormatFile), []byte(`{"blobstore":1,"metadata":99,"written_by":"v99.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := runRecover(t, "--data-dir", dir); !errors.Is(err, datadir.ErrTooNew) {
		t.Fatalf("recover on a data dir of a newer layout: %v; want ErrTooNew", err)
	}
}

// TestRecoverMissingDataDir: recover does not create the data dir it was
// pointed at.
func TestRecoverMissingDataDir(t *testing.T) {
	clearMeshregEnv(t)
	dir := filepath.Join(t.TempDir(), "absent")
	err := runRecover(t, "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("recover on a missing data dir: %v; want it to say so", err)
	}
	if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("recover created %s", dir)
	}
}
