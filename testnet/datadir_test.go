package testnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet"
)

// TestSecondProcessOnDataDir starts a second meshreg on the data dir of a
// running node that has a chunked upload in progress. The second process
// must exit at once, naming the process that holds the data dir, and must
// touch nothing: the first node's upload completes and its blob is
// readable.
func TestSecondProcessOnDataDir(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{})
	c := testnet.NewClient(n.URL())
	ctx := t.Context()
	const repo = "e2e/datadir"

	blob := testnet.RandomBytes(3 << 20)
	d := digest.FromBytes(blob)
	half := int64(len(blob) / 2)
	loc, err := c.StartUpload(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if loc, err = c.PatchUpload(ctx, loc, 0, half, bytes.NewReader(blob[:half])); err != nil {
		t.Fatalf("first chunk: %v", err)
	}
	if partial, err := testnet.LeftoverUploads(n.DataDir()); err != nil || len(partial) == 0 {
		t.Fatalf("no upload temp file under %s with half an upload accepted (err %v): the test would prove nothing", n.DataDir(), err)
	}

	listen, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p2pAddr, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, p2pPort, _ := net.SplitHostPort(p2pAddr)
	logPath := filepath.Join(testnet.KeepDir(t, "second"), "second.log")
	second, err := testnet.StartProcess(testnet.ProcessConfig{
		Name: "second meshreg", Path: testnet.Binary(t), LogPath: logPath, StripEnv: []string{"MESHREG_"},
		Args: []string{"serve", "--listen", listen, "--data-dir", n.DataDir(), "--p2p-listen", "/ip4/127.0.0.1/tcp/" + p2pPort},
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-second.Done():
	case <-time.After(30 * time.Second):
		second.Kill()
		t.Fatal("the second meshreg on the same data dir still runs after 30 s; want it to exit at once")
	}
	if second.ExitErr() == nil {
		t.Error("the second meshreg on the same data dir exited with status 0; want a failure")
	}
	out, _ := os.ReadFile(logPath)
	want := fmt.Sprintf("data dir %s is in use by another meshreg (pid %d", n.DataDir(), n.PID())
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "pass another --data-dir") {
		t.Errorf("the second meshreg's output does not say who holds the data dir and what to do; want %q …\n%s", want, out)
	}
	if strings.Contains(string(out), "blobstore opened") {
		t.Errorf("the second meshreg opened the blob store of a data dir in use:\n%s", out)
	}

	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := c.FinishUpload(pctx, loc, d, int64(len(blob))-half, bytes.NewReader(blob[half:])); err != nil {
		t.Fatalf("finishing the first node's upload after the second process: %v", err)
	}
	if err := c.VerifyBlob(pctx, repo, d, int64(len(blob))); err != nil {
		t.Fatalf("reading the uploaded blob: %v", err)
	}
}

// startServe starts `bin serve` on dataDir with fresh ports and returns
// the process, its API URL and its log file.
func startServe(t *testing.T, bin, dataDir, name string) (*testnet.Process, string, string) {
	t.Helper()
	listen, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	p2pAddr, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	_, p2pPort, _ := net.SplitHostPort(p2pAddr)
	logPath := filepath.Join(testnet.KeepDir(t, name), name+".log")
	p, err := testnet.StartProcess(testnet.ProcessConfig{
		Name: name, Path: bin, LogPath: logPath, StripEnv: []string{"MESHREG_"},
		Args: []string{"serve", "--listen", listen, "--data-dir", dataDir, "--p2p-listen", "/ip4/127.0.0.1/tcp/" + p2pPort},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.Exited() {
			if err := p.Stop(30 * time.Second); err != nil {
				t.Errorf("stopping %s: %v", name, err)
			}
		}
	})
	return p, "http://" + listen, logPath
}

// TestNewerDataDirFormatRefused: a data dir whose FORMAT records a blob
// store layout newer than the binary reads is refused at start, with the
// versions and what to do, and nothing in it is touched.
func TestNewerDataDirFormatRefused(t *testing.T) {
	testnet.RequireProcess(t)
	dataDir := filepath.Join(testnet.KeepDir(t, "newer"), "data")
	leftover := filepath.Join(dataDir, "uploads", "some-upload")
	format := `{"blobstore":2,"metadata":1,"written_by":"v99.0.0"}`
	if err := os.MkdirAll(filepath.Dir(leftover), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(leftover, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "FORMAT"), []byte(format), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _, logPath := startServe(t, testnet.Binary(t), dataDir, "newer")
	select {
	case <-p.Done():
	case <-time.After(30 * time.Second):
		p.Kill()
		t.Fatal("meshreg still runs 30 s after start on a data dir of a newer layout")
	}
	if p.ExitErr() == nil {
		t.Error("meshreg exited 0 on a data dir of a newer layout")
	}
	out, _ := os.ReadFile(logPath)
	for _, want := range []string{"written by meshreg v99.0.0", "blob store v2", "reads (blob store up to v1", "run meshreg v99.0.0 or newer on it"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(leftover); err != nil {
		t.Errorf("the refused data dir was changed: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dataDir, "FORMAT")); string(b) != format {
		t.Errorf("FORMAT of the refused data dir changed to %q", b)
	}
}

// TestDataDirWithoutFormat: a data dir written by the release before
// FORMAT existed is layout version 1: a node opens it, records the FORMAT
// and serves what was in it.
func TestDataDirWithoutFormat(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{})
	c := testnet.NewClient(n.URL())
	ctx := t.Context()
	b := testnet.RandomBytes(64 << 10)
	d, err := c.PushBytes(ctx, "e2e/format", b)
	if err != nil {
		t.Fatal(err)
	}
	n.Stop()
	path := filepath.Join(n.DataDir(), "FORMAT")
	if err := os.Remove(path); err != nil {
		t.Fatalf("a node's data dir has no FORMAT after a run: %v", err)
	}
	n.Restart()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no FORMAT after a restart on a data dir without one: %v", err)
	}
	var f map[string]any
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("FORMAT %q: %v", raw, err)
	}
	_, _, body, err := c.Get(ctx, "/_meshreg/v1/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if f["blobstore"] != 1.0 || f["metadata"] != 1.0 || f["written_by"] != st.Version || st.Version == "" {
		t.Errorf("FORMAT = %s; want blob store and metadata layouts 1, written by %q (the status's version)", raw, st.Version)
	}
	if err := c.VerifyBlob(ctx, "e2e/format", d, int64(len(b))); err != nil {
		t.Errorf("the blob pushed before is not served: %v", err)
	}
}
