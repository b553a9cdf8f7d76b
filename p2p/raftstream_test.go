package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshreg/meshreg/testnet/tlog"
)

// countFSM adds each command's uint64 to a counter. Test-only.
type countFSM struct{ n atomic.Uint64 }

func (f *countFSM) Apply(l *raft.Log) any {
	return f.n.Add(binary.BigEndian.Uint64(l.Data))
}
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return countSnap(f.n.Load()), nil }
func (f *countFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var b [8]byte
	if _, err := io.ReadFull(rc, b[:]); err != nil {
		return err
	}
	f.n.Store(binary.BigEndian.Uint64(b[:]))
	return nil
}

type countSnap uint64

func (s countSnap) Persist(sink raft.SnapshotSink) error {
	if err := binary.Write(sink, binary.BigEndian, uint64(s)); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}
func (countSnap) Release() {}

// raftCluster is a test-only Raft cluster, one member per host, over
// RaftStreamLayer with in-memory stores and a counting FSM.
type raftCluster struct {
	rafts []*raft.Raft
	fsms  []*countFSM
}

// startRaftCluster starts a bootstrapped Raft on each host, shut down when
// the test ends. The hosts are not connected first: the Raft addresses are
// multiaddrs, enough to dial.
func startRaftCluster(t *testing.T, hosts []*Host) *raftCluster {
	t.Helper()
	var servers []raft.Server
	for _, h := range hosts {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(h.ID().String()), Address: raft.ServerAddress(h.RaftAddress())})
	}
	c := &raftCluster{}
	for i, h := range hosts {
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(h.ID().String())
		conf.HeartbeatTimeout = 300 * time.Millisecond
		conf.ElectionTimeout = 300 * time.Millisecond
		conf.LeaderLeaseTimeout = 150 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.Logger = hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("raft-%d", i), Output: tlog.Writer{T: t}, Level: hclog.Info})
		layer := NewRaftStreamLayer(h)
		if got, want := layer.Addr().String(), h.RaftAddress(); got != want || !strings.HasSuffix(got, "/p2p/"+h.ID().String()) || !strings.Contains(got, "/tcp/") {
			t.Errorf("layer Addr %s, want %s: a TCP multiaddr ending in /p2p/<id>", got, want)
		}
		trans := raft.NewNetworkTransport(layer, 3, 2*time.Second, tlog.Writer{T: t})
		logs, stable, snaps := raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(conf, logs, stable, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			t.Fatalf("BootstrapCluster %d: %v", i, err)
		}
		fsm := &countFSM{}
		r, err := raft.NewRaft(conf, fsm, logs, stable, snaps, trans)
		if err != nil {
			t.Fatalf("NewRaft %d: %v", i, err)
		}
		c.rafts, c.fsms = append(c.rafts, r), append(c.fsms, fsm)
		t.Cleanup(func() {
			if err := r.Shutdown().Error(); err != nil {
				t.Errorf("raft %d Shutdown: %v", i, err)
			}
			if err := trans.Close(); err != nil {
				t.Errorf("transport %d Close: %v", i, err)
			}
		})
	}
	return c
}

// apply adds 1 to the count n times through r and waits for every commit.
func apply(t testing.TB, r *raft.Raft, n int) {
	t.Helper()
	futures := make([]raft.ApplyFuture, 0, n)
	for range n {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], 1)
		futures = append(futures, r.Apply(b[:], 2*time.Second))
	}
	for i, f := range futures {
		if err := f.Error(); err != nil {
			t.Fatalf("Apply %d: %v", i, err)
		}
	}
}

// waitCount waits until every FSM in fsms has counted want.
func waitCount(t testing.TB, fsms []*countFSM, want uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for i, f := range fsms {
		for f.n.Load() != want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := f.n.Load(); got != want {
			t.Errorf("FSM %d counted %d, want %d", i, got, want)
		}
	}
}

func TestRaftOverStreams(t *testing.T) {
	t.Parallel()
	hosts := []*Host{newTestHost(t, nil), newTestHost(t, nil), newTestHost(t, nil)}
	c := startRaftCluster(t, hosts)
	leader := waitLeader(t, c.rafts, 5*time.Second)
	apply(t, leader, 100)
	waitCount(t, c.fsms, 100, 5*time.Second)
}

// TestRaftPartition cuts the leader off with the PartitionGater: the other
// two elect a new leader and commit without it; after Heal the old leader
// catches up over redialed streams.
func TestRaftPartition(t *testing.T) {
	t.Parallel()
	var hosts []*Host
	for range 3 {
		hosts = append(hosts, newTestHost(t, func(c *Config) { c.Gater = NewPartitionGater() }))
	}
	c := startRaftCluster(t, hosts)
	leader := waitLeader(t, c.rafts, 5*time.Second)
	apply(t, leader, 10)
	waitCount(t, c.fsms, 10, 5*time.Second)

	var cut *Host
	var others []*raft.Raft
	var ids []peer.ID
	for i, r := range c.rafts {
		if r == leader {
			cut = hosts[i]
			continue
		}
		others = append(others, r)
		ids = append(ids, hosts[i].ID())
	}
	if err := cut.Partition(ids...); err != nil {
		t.Fatalf("Partition: %v", err)
	}
	newLeader := waitLeader(t, others, 5*time.Second)
	apply(t, newLeader, 10)

	if err := cut.Heal(ids...); err != nil {
		t.Fatalf("Heal: %v", err)
	}
	waitCount(t, c.fsms, 20, 5*time.Second)
}

// waitLeader returns the raft that is leader once all agree on one.
func waitLeader(t testing.TB, rafts []*raft.Raft, timeout time.Duration) *raft.Raft {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, r := range rafts {
			if r.State() == raft.Leader {
				return r
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no leader within %v", timeout)
	return nil
}

func TestRaftStreamLayer(t *testing.T) {
	t.Parallel()
	a, b := newTestHost(t, nil), newTestHost(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Connect(ctx, addrOf(t, b, ma.P_TCP)); err != nil {
		t.Fatal(err)
	}
	la, lb := NewRaftStreamLayer(a), NewRaftStreamLayer(b)
	defer la.Close()

	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := lb.Accept()
		if err != nil {
			t.Errorf("Accept: %v", err)
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := la.Dial(raft.ServerAddress(b.ID().String()), 2*time.Second)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	if got := c.RemoteAddr().String(); got != b.ID().String() {
		t.Errorf("RemoteAddr %s, want %s", got, b.ID())
	}
	if got := c.LocalAddr().String(); got != a.ID().String() {
		t.Errorf("LocalAddr %s, want %s", got, a.ID())
	}
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	sc, ok := <-accepted
	if !ok {
		t.FailNow()
	}
	defer sc.Close()
	if got := sc.RemoteAddr().String(); got != a.ID().String() {
		t.Errorf("accepted RemoteAddr %s, want %s", got, a.ID())
	}
	if err := sc.SetReadDeadline(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v; want \"hi\"", buf, err)
	}
	// A deadline in the past makes reads fail at once.
	if err := sc.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if _, err := sc.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read past deadline: %v, want a timeout", err)
	}

	if _, err := la.Dial("not-a-peer-id", time.Second); err == nil {
		t.Error("Dial to a non-peer-id address: got nil error")
	}

	// Close unblocks Accept and stops new streams.
	acceptErr := make(chan error, 1)
	go func() {
		_, err := lb.Accept()
		acceptErr <- err
	}()
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
	if err := lb.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// libp2p negotiates the protocol lazily once identify has seen it, so a
	// Dial to a closed layer may succeed; the first round trip must fail.
	if c, err := la.Dial(raft.ServerAddress(b.ID().String()), time.Second); err == nil {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write([]byte("x"))
		if _, err := c.Read(buf); err == nil {
			t.Error("round trip to a closed layer: got nil error")
		}
		_ = c.Close()
	}
	if _, err := lb.Dial(raft.ServerAddress(a.ID().String()), time.Second); !errors.Is(err, ErrStreamLayerClosed) {
		t.Errorf("Dial from a closed layer: %v, want ErrStreamLayerClosed", err)
	}
}
