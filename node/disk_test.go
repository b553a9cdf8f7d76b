package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
)

// fakeDisk is a test-only free-space function with a settable answer.
type fakeDisk struct {
	free  int64
	calls int
}

func (f *fakeDisk) statfs(string) (int64, int64, error) {
	f.calls++
	return f.free, 1 << 30, nil
}

// countingCounter counts Inc calls (test-only).
type countingCounter struct {
	prometheus.Counter
	n int
}

func (c *countingCounter) Inc() { c.n++; c.Counter.Inc() }

func newTestGuard(reserve int64) (*diskGuard, *fakeDisk, *time.Time, *countingCounter) {
	fd := &fakeDisk{free: 1 << 30}
	now := time.Unix(1_000_000, 0)
	refused := &countingCounter{Counter: prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"})}
	g := newDiskGuard("/data", reserve, func() string { return "12D3KooWTest" }, refused, slog.New(slog.DiscardHandler))
	g.statfs = fd.statfs
	g.now = func() time.Time { return now }
	return g, fd, &now, refused
}

func assertLowDisk(t *testing.T, err error) {
	t.Helper()
	var oe *oci.Error
	if !errors.As(err, &oe) {
		t.Fatalf("error %v is not an OCI error", err)
	}
	if oe.HTTPStatus() != http.StatusInsufficientStorage || oe.Code != oci.Denied {
		t.Fatalf("refusal served as %d %s, want 507 DENIED", oe.HTTPStatus(), oe.Code.Name)
	}
	for _, want := range []string{"node 12D3KooWTest is low on disk", "free", "reserved", "--min-free-disk"} {
		if !strings.Contains(oe.Message, want) {
			t.Errorf("message %q does not say %q", oe.Message, want)
		}
	}
}

func TestDiskGuardRefusesBelowReserveAndRecovers(t *testing.T) {
	g, fd, now, refused := newTestGuard(100 << 20)
	if err := g.check(); err != nil {
		t.Fatalf("1 GiB free, 100 MiB reserved: %v", err)
	}
	fd.free = 99 << 20
	if err := g.check(); err != nil {
		t.Fatalf("a reading is reused for a second, got a fresh one: %v", err)
	}
	*now = now.Add(diskCheckEvery)
	err := g.check()
	assertLowDisk(t, err)
	if !errors.Is(err, ErrLowDisk) {
		t.Errorf("refusal %v does not wrap ErrLowDisk", err)
	}
	if !g.status().Low {
		t.Error("status does not report the disk low")
	}
	if got := refused.n; got != 1 {
		t.Errorf("refused counter = %v, want 1", got)
	}
	fd.free = 500 << 20 // an operator freed space
	*now = now.Add(diskCheckEvery)
	if err := g.check(); err != nil {
		t.Fatalf("space is back but writes are still refused: %v", err)
	}
	if g.status().Low {
		t.Error("status still reports the disk low")
	}
}

func TestDiskGuardOff(t *testing.T) {
	g, fd, _, _ := newTestGuard(0)
	fd.free = 0
	if err := g.check(); err != nil {
		t.Fatalf("--min-free-disk 0 refused a write: %v", err)
	}
	// ENOSPC is still reported clearly.
	assertLowDisk(t, g.mapError(fmt.Errorf("blobstore: put: %w", syscall.ENOSPC)))
}

func TestDiskGuardStopsALargeWrite(t *testing.T) {
	g, fd, _, _ := newTestGuard(100 << 20)
	r := g.reader(bytes.NewReader(make([]byte, 64<<20)))
	buf := make([]byte, 1<<20)
	var read int64
	for read < 2*guardEvery {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("read with space free: %v", err)
		}
		read += int64(n)
	}
	fd.free = 50 << 20 // the disk filled up meanwhile
	_, err := io.Copy(io.Discard, r)
	assertLowDisk(t, err)
	if fd.calls < 2 {
		t.Fatalf("the guard read the free space %d times in 2 × %d bytes, want a fresh reading each time", fd.calls, guardEvery)
	}
}

func TestDiskGuardMapsErrors(t *testing.T) {
	g, _, _, _ := newTestGuard(100 << 20)
	assertLowDisk(t, g.mapError(fmt.Errorf("write: %w", syscall.ENOSPC)))
	fwd := g.mapError(&consensus.ForwardError{Code: consensus.CodeInternal, Msg: lowDiskPrefix + "node X is low on disk"})
	var oe *oci.Error
	if !errors.As(fwd, &oe) || oe.HTTPStatus() != http.StatusInsufficientStorage {
		t.Fatalf("a leader's low-disk refusal maps to %v, want 507", fwd)
	}
	other := errors.New("boom")
	if got := g.mapError(other); got != other {
		t.Fatalf("mapError changed an unrelated error: %v", got)
	}
}

func TestDiskGuardSeesABurstOfSmallWrites(t *testing.T) {
	g, fd, _, _ := newTestGuard(100 << 20)
	// Many small pushes within one second (the clock does not move): the
	// bytes they write still force fresh readings.
	refusedAt := -1
	for i := 0; i < 64 && refusedAt < 0; i++ {
		if i == 8 {
			fd.free = 90 << 20 // the disk filled meanwhile
		}
		if _, err := io.Copy(io.Discard, g.reader(bytes.NewReader(make([]byte, 1<<20)))); err != nil {
			assertLowDisk(t, err)
			refusedAt = i
		}
	}
	if refusedAt < 0 || refusedAt > 8+guardEvery>>20 {
		t.Fatalf("a burst of 1 MiB writes was refused at write %d; want within %d MiB of the disk filling (write 8)", refusedAt, guardEvery>>20)
	}
}

// TestForwardedWriteRefusedByALowLeader follows a write forwarded to a
// leader that is low on disk: the leader does not apply it, and the
// follower's client gets the same 507, naming the leader.
func TestForwardedWriteRefusedByALowLeader(t *testing.T) {
	g, fd, _, _ := newTestGuard(100 << 20)
	leader := &Node{disk: g}
	applied := 0
	serve := leader.diskChecked(func(context.Context, peer.ID, []byte) []byte {
		applied++
		b, _ := json.Marshal(forwardResult{Index: 7})
		return b
	})
	if out := serve(t.Context(), "", nil); applied != 1 || !strings.Contains(string(out), `"index":7`) {
		t.Fatalf("with space free the forwarded write was not applied: %s", out)
	}
	fd.free = 1 << 20
	g.checked = time.Time{} // next check reads afresh
	out := serve(t.Context(), "", nil)
	if applied != 1 {
		t.Fatal("a leader low on disk applied a forwarded write")
	}
	var res forwardResult
	if err := json.Unmarshal(out, &res); err != nil || res.Code == "" {
		t.Fatalf("the leader's answer %s is not an error (%v)", out, err)
	}
	follower, _, _, _ := newTestGuard(100 << 20)
	err := follower.mapError(fmt.Errorf("put manifest: %w", &consensus.ForwardError{Code: res.Code, Msg: res.Msg}))
	var oe *oci.Error
	if !errors.As(err, &oe) || oe.HTTPStatus() != http.StatusInsufficientStorage || !strings.Contains(oe.Message, "leader node 12D3KooWTest is low on disk") {
		t.Fatalf("the follower answers %v, want 507 naming the leader as low on disk", err)
	}
}
