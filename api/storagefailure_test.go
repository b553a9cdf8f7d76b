package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// TestMetadataStorageFailureStopsTheNode: when the metadata database fails
// under a write (a broken disk, played by ApplyFault), the client gets a
// 503 that says so, the node reports it in its status and readiness, its
// Run returns the error (serve then stops the process), and after a
// restart the write is there: the entry is applied again from the log.
func TestMetadataStorageFailureStopsTheNode(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var broken atomic.Bool
	start := func() (*node.Node, *httptest.Server, chan error, context.CancelFunc) {
		cfg := node.DefaultConfig()
		cfg.DataDir = dir
		cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.Consensus.ApplyFault = func(uint64) error {
			if broken.Load() {
				return fmt.Errorf("write %s/meta/fsm/000001.vlog: %w", dir, syscall.EIO)
			}
			return nil
		}
		log := tlog.Logger(t, slog.LevelWarn)
		n, err := node.Open(cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		h, err := api.New(api.DefaultConfig(), n, n, api.NewMetrics(prometheus.NewRegistry()), log)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- n.Run(ctx) }()
		return n, srv, done, cancel
	}
	stop := func(n *node.Node, srv *httptest.Server, done chan error, cancel context.CancelFunc) {
		srv.Close()
		cancel()
		<-done
		if err := n.Close(); err != nil {
			t.Errorf("closing the node: %v", err)
		}
	}
	r := &registry{t: t}
	n, srv, done, cancel := start()
	r.url = srv.URL
	r.pushBlob("app", []byte("before"))

	broken.Store(true)
	lost := []byte("during")
	resp, body := r.do("POST", "/v2/app/blobs/uploads/?digest="+digest.FromBytes(lost).String(), lost)
	expect(t, resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	if !strings.Contains(string(body), "metadata") || !strings.Contains(string(body), "input/output error") {
		t.Errorf("the client is not told what failed: %s", body)
	}
	select {
	case err := <-done:
		if !errors.Is(err, consensus.ErrStorageFailed) || !errors.Is(err, syscall.EIO) {
			t.Errorf("Run returned %v, want ErrStorageFailed with its cause", err)
		}
		done <- err // for stop
	case <-time.After(20 * time.Second):
		t.Fatal("the node did not stop after its metadata storage failed")
	}
	resp, body = r.do("GET", "/_meshreg/v1/status", nil)
	var st struct {
		Raft struct {
			StorageError string `json:"storage_error"`
		} `json:"raft"`
	}
	if err := json.Unmarshal(body, &st); err != nil || !strings.Contains(st.Raft.StorageError, "input/output error") {
		t.Errorf("status does not show the failure: %s", body)
	}
	if resp, _ := r.do("GET", "/readyz", nil); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("readyz after the failure: %d, want 503", resp.StatusCode)
	}
	stop(n, srv, done, cancel)

	broken.Store(false)
	n, srv, done, cancel = start()
	defer stop(n, srv, done, cancel)
	r.url = srv.URL
	var headStatus int
	ok := func() bool {
		resp, _ := r.do("HEAD", "/v2/app/blobs/"+digest.FromBytes(lost).String(), nil)
		headStatus = resp.StatusCode
		return headStatus == http.StatusOK
	}
	deadline := time.Now().Add(20 * time.Second)
	for !ok() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if headStatus != http.StatusOK {
		t.Errorf("after restart, the write the failure interrupted is not applied: HEAD %d", headStatus)
	}
}
