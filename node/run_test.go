package node

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet/tlog"
)

// openTestNode opens a real one-node cluster (blobstore, badger, Raft,
// libp2p on loopback) in a temporary directory; the caller closes it.
func openTestNode(t *testing.T) *Node {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.UploadIdleTimeout = time.Second // the expiry loop ticks too
	cfg.RepairInterval = 100 * time.Millisecond
	n, err := Open(cfg, tlog.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRunStopsOnStorageFailure: a failure of the metadata store's storage
// stops every loop, and Run returns it; Close then leaves nothing running
// (TestMain's goleak checks) and refuses new background work.
func TestRunStopsOnStorageFailure(t *testing.T) {
	n := openTestNode(t)
	done := make(chan error, 1)
	go func() { done <- n.Run(context.Background()) }()
	waitReady(t, n)

	disk := errors.New("badger: input/output error")
	n.fatal <- disk
	select {
	case err := <-done:
		if !errors.Is(err, disk) {
			t.Fatalf("Run = %v, want the storage failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop after the storage failure")
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := n.startFetch(digest.FromString("late"), 4, nil); !errors.Is(err, errShuttingDown) {
		t.Errorf("a fetch asked for after Close: %v, want errShuttingDown", err)
	}
}

// running runs n until the test ends, then stops and closes it.
func running(t *testing.T, n *Node) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// TestRunEndsWithContext: Run returns nil once ctx ends, after every loop
// stopped.
func TestRunEndsWithContext(t *testing.T) {
	n := openTestNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	waitReady(t, n)
	n.announce(digest.FromString("work a request started")) // through the owner
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
	if err := n.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// waitReady waits until the one-node cluster has elected itself.
func waitReady(t *testing.T, n *Node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatal("the node never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
