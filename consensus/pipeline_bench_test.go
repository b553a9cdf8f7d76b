package consensus

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
)

// BenchmarkTCPWrites measures a write's latency in a three-node cluster
// of Stores over real TCP on 127.0.0.1, with the production Raft timing,
// written on the leader and on a follower (forwarded in process: only the
// Raft cost counts; the follower's write returns once it applied it, as
// node's forwarder does), one writer at a time and eight at once, with the
// median and 99th percentile latency. It is what turning off pipelined
// replication (withoutPipeline) and the commit notification
// (notifyCommits) were measured with:
//
//	go test -run '^$' -bench TCPWrites -benchtime 1000x ./consensus/
func BenchmarkTCPWrites(b *testing.B) {
	leader, follower := tcpStores(b, 3, nil)
	qleader, qfollower := tcpStores(b, 3, func(c *Config) { c.quietCommits = true })
	for _, bc := range []struct {
		name    string
		s       *Store
		writers int
	}{
		{"leader", leader, 1},
		{"follower", follower, 1},
		{"leader-8writers", leader, 8},
		{"follower-8writers", follower, 8},
		{"leader-no-commit-notify", qleader, 1},
		{"follower-no-commit-notify", qfollower, 1},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var n atomic.Int64
			var wg sync.WaitGroup
			lat := make([]time.Duration, b.N)
			b.ResetTimer()
			for range bc.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := n.Add(1)
						if i > int64(b.N) {
							return
						}
						d := digest.FromString(fmt.Sprintf("%s-%d", bc.name, i))
						start := time.Now()
						if err := bc.s.LinkBlob(context.Background(), "bench", d, i); err != nil {
							b.Error(err)
							return
						}
						lat[i-1] = time.Since(start)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// tcpStores opens n Stores over TCP, bootstrapped together, and returns
// the leader and a follower; they are closed when b ends.
func tcpStores(b *testing.B, n int, tweak func(*Config)) (leader, follower *Store) {
	b.Helper()
	dir := b.TempDir() // before the Cleanup below, so removed after it
	fwd := &directForwarder{nodes: map[string]*Store{}}
	var (
		servers []Server
		trans   []*raft.NetworkTransport
	)
	for i := range n {
		tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		trans = append(trans, tr)
		servers = append(servers, Server{ID: fmt.Sprintf("n%d", i+1), Address: string(tr.LocalAddr())})
	}
	var stores []*Store
	b.Cleanup(func() {
		for _, s := range stores {
			if err := s.Close(); err != nil {
				b.Errorf("Close: %v", err)
			}
		}
		for _, tr := range trans { // see startTCPRaft
			tr.CloseStreams()
		}
	})
	for i, srv := range servers {
		cfg := testConfig(b, filepath.Join(dir, srv.ID))
		cfg.NodeID, cfg.Transport, cfg.Bootstrap, cfg.Forwarder = srv.ID, trans[i], servers, fwd.from(srv.ID)
		if tweak != nil {
			tweak(&cfg)
		}
		s, err := Open(cfg)
		if err != nil {
			b.Fatal(err)
		}
		stores = append(stores, s)
		fwd.add(srv.ID, s)
	}
	deadline := time.Now().Add(10 * time.Second)
	for leader == nil || follower == nil {
		if time.Now().After(deadline) {
			b.Fatal("no leader every node knows within 10s")
		}
		time.Sleep(10 * time.Millisecond)
		leader, follower = nil, nil
		for _, s := range stores {
			if s.raft.State() == raft.Leader {
				leader = s
			}
		}
		for _, s := range stores {
			if _, id := s.raft.LeaderWithID(); leader == nil || string(id) != leader.cfg.NodeID {
				leader = nil
				break
			}
			if s != leader {
				follower = s
			}
		}
	}
	return leader, follower
}

// directForwarder hands a follower's write to the leader's ApplyForwarded
// in process, then waits until the follower applied the leader's index, as
// node's forwarder does (a client reads its write where it wrote it).
type directForwarder struct {
	mu    sync.Mutex
	nodes map[string]*Store
}

func (f *directForwarder) add(id string, s *Store) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes[id] = s
}

// from is the forwarder of the follower id.
func (f *directForwarder) from(id string) Forwarder { return followerForwarder{f, id} }

type followerForwarder struct {
	*directForwarder
	self string
}

func (f followerForwarder) Forward(ctx context.Context, leader Server, cmd []byte) error {
	f.mu.Lock()
	s, self := f.nodes[leader.ID], f.nodes[f.self]
	f.mu.Unlock()
	if s == nil || self == nil {
		return fmt.Errorf("no node %s or %s", leader.ID, f.self)
	}
	err := s.ApplyForwarded(ctx, cmd)
	if code := ErrorCode(err); code != "" {
		return &ForwardError{Code: code, Msg: err.Error()}
	}
	return self.WaitApplied(ctx, s.AppliedIndex())
}
