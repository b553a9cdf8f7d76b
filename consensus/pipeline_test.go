package consensus

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestReplicationSurvivesRejectedAppends is the regression test for
// hashicorp/raft's pipeline deadlock (hashicorp/raft#612): when a follower
// answers an AppendEntries with Success=false while a pipeline has two
// requests in flight, the leader's replication goroutine for it can park
// forever in the pipeline's send, so the follower gets no more entries and
// the leader's Shutdown hangs. Followers refuse appends in routine events
// (a log mismatch after a rejoin or a restart); here a follower's log
// store fails now and then while the leader takes a stream of writes, over
// real TCP, through the transport wrapping Open gives a NetworkTransport.
// The race is timing-dependent, so the test runs a few rounds.
func TestReplicationSurvivesRejectedAppends(t *testing.T) {
	if testing.Short() {
		t.Skip("real TCP raft clusters; a few seconds")
	}
	for i := range 3 {
		t.Run(fmt.Sprintf("round%d", i), testRejectedAppends)
	}
}

func testRejectedAppends(t *testing.T) {
	nodes := startTCPRaft(t, 3)
	leader := waitTCPLeader(t, nodes)
	var flaky *tcpRaftNode
	for _, n := range nodes {
		if n != leader {
			flaky = n
			break
		}
	}
	// Every fourth batch the follower is sent fails to be stored, so it
	// answers Success=false, up to 40 times.
	flaky.logs.failEvery.Store(4)
	flaky.logs.failures.Store(40)

	const writers, writes = 4, 150
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range writes {
				if err := leader.raft.Apply([]byte(fmt.Sprintf("%d-%d", w, i)), 5*time.Second).Error(); err != nil {
					errs <- fmt.Errorf("write %d-%d: %w", w, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	flaky.logs.failures.Store(0)

	want := leader.raft.LastIndex()
	deadline := time.Now().Add(10 * time.Second)
	for flaky.raft.AppliedIndex() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the follower whose appends failed %d times is stuck at applied index %d, the leader is at %d",
				flaky.logs.failed.Load(), flaky.raft.AppliedIndex(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if flaky.logs.failed.Load() == 0 {
		t.Fatal("the follower never refused an append: the test tests nothing")
	}
	t.Logf("follower refused %d appends and caught up to index %d", flaky.logs.failed.Load(), want)
}

// tcpRaftNode is a bare raft instance over a real TCP transport, with a
// log store that can be told to fail.
type tcpRaftNode struct {
	raft *raft.Raft
	logs *flakyLogs
}

// startTCPRaft starts n voters on 127.0.0.1, bootstrapped together. When
// the test ends they are shut down, and the test fails if one's Shutdown
// hangs.
func startTCPRaft(t *testing.T, n int) []*tcpRaftNode {
	t.Helper()
	var (
		tcps []*raft.NetworkTransport
		conf raft.Configuration
	)
	for i := range n {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		tcps = append(tcps, tr)
		conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i+1)), Address: tr.LocalAddr(), Suffrage: raft.Voter})
	}
	var nodes []*tcpRaftNode
	t.Cleanup(func() {
		for i, node := range nodes {
			done := make(chan error, 1)
			go func() { done <- node.raft.Shutdown().Error() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("n%d: Shutdown: %v", i+1, err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("n%d: Shutdown did not return within 10s", i+1)
			}
		}
		// Raft closes a transport without its pooled outgoing connections,
		// which keep the other side's handlers reading; close them too.
		for _, tr := range tcps {
			tr.CloseStreams()
		}
	})
	for i, tcp := range tcps {
		tr := withoutPipeline(tcp)
		rc := raft.DefaultConfig()
		rc.LocalID = conf.Servers[i].ID
		rc.Logger = newHclog(testLogger(t), string(rc.LocalID))
		// Generous for a loaded machine: an election mid-round is not
		// what this test is about.
		rc.HeartbeatTimeout = time.Second
		rc.ElectionTimeout = time.Second
		rc.LeaderLeaseTimeout = 500 * time.Millisecond
		rc.CommitTimeout = 5 * time.Millisecond
		logs, stable, snaps := &flakyLogs{InmemStore: raft.NewInmemStore()}, raft.NewInmemStore(), raft.NewInmemSnapshotStore()
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, tr, conf); err != nil {
			t.Fatal(err)
		}
		r, err := raft.NewRaft(rc, &countingFSM{}, logs, stable, snaps, tr)
		if err != nil {
			_ = tcp.Close()
			t.Fatal(err)
		}
		nodes = append(nodes, &tcpRaftNode{raft: r, logs: logs})
	}
	return nodes
}

func waitTCPLeader(t *testing.T, nodes []*tcpRaftNode) *tcpRaftNode {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader within 10s")
	return nil
}

// flakyLogs fails every failEvery-th StoreLogs call while failures is
// positive, the way a follower refuses an append it cannot store.
type flakyLogs struct {
	*raft.InmemStore
	calls, failEvery, failures, failed atomic.Int64
}

var errFlakyLogs = errors.New("flakyLogs: refused")

func (f *flakyLogs) StoreLogs(logs []*raft.Log) error {
	if every := f.failEvery.Load(); every > 0 && f.calls.Add(1)%every == 0 && f.failures.Add(-1) >= 0 {
		f.failed.Add(1)
		return errFlakyLogs
	}
	return f.InmemStore.StoreLogs(logs)
}

func (f *flakyLogs) StoreLog(l *raft.Log) error { return f.StoreLogs([]*raft.Log{l}) }

// countingFSM applies anything and keeps nothing but a count.
type countingFSM struct{ n atomic.Uint64 }

func (f *countingFSM) Apply(*raft.Log) any { f.n.Add(1); return nil }

func (f *countingFSM) Snapshot() (raft.FSMSnapshot, error) { return countingSnapshot{}, nil }

func (f *countingFSM) Restore(rc io.ReadCloser) error { return rc.Close() }

type countingSnapshot struct{}

func (countingSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (countingSnapshot) Release()                             {}

// TestOpenTurnsOffPipelining checks that Open's transport refuses to
// pipeline and still offers what raft looks for by type assertion: closing
// (Shutdown closes the transport) and pre-vote.
func TestOpenTurnsOffPipelining(t *testing.T) {
	tcp, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	cfg := DefaultConfig()
	cfg.NodeID, cfg.Transport = "n1", tcp
	trans := raftTransport(cfg)
	if _, err := trans.AppendEntriesPipeline("n2", "127.0.0.1:1"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Errorf("AppendEntriesPipeline: %v, want %v", err, raft.ErrPipelineReplicationNotSupported)
	}
	if _, ok := trans.(raft.WithPreVote); !ok {
		t.Error("the transport lost pre-vote (raft.WithPreVote)")
	}
	if _, ok := trans.(raft.WithClose); !ok {
		t.Error("the transport lost Close (raft.WithClose)")
	}
	if trans.LocalAddr() != tcp.LocalAddr() {
		t.Errorf("LocalAddr %s, want %s", trans.LocalAddr(), tcp.LocalAddr())
	}

	// Other transports (the in-memory one of tests) are left alone.
	_, mem := raft.NewInmemTransport("n1")
	cfg.Transport = mem
	if got := raftTransport(cfg); got != raft.Transport(mem) {
		t.Errorf("an in-memory transport became %T", got)
	}
	cfg.Transport = nil
	if got, ok := raftTransport(cfg).(*raft.InmemTransport); !ok || got.LocalAddr() != "n1" {
		t.Errorf("no transport gave %T, want an in-memory one at n1", got)
	}
}
