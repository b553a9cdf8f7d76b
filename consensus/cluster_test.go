package consensus

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
)

// testCluster is a cluster of stores in one process on raft's in-memory
// transport, the way hashicorp/raft's own tests build clusters. Forwarded
// writes go through memForwarder, which round-trips errors the way a real
// RPC must: as ErrorCode and message.
type testCluster struct {
	t     testing.TB
	tweak func(*Config)
	base  string // the nodes' directories are base/<id>

	mu    sync.Mutex // guards nodes (the forwarder reads it concurrently)
	nodes map[string]*Store
	trans map[string]*raft.InmemTransport
	dirs  map[string]string
	order []string // ids in creation order
}

// fastRaft shortens raft's timing so elections and failover take well under
// a second, yet leaves the leader's lease room for fsyncs and parallel
// tests (-race included): a lease that runs out makes the leader step down.
func fastRaft(rc *raft.Config) {
	rc.HeartbeatTimeout = 250 * time.Millisecond
	rc.ElectionTimeout = 250 * time.Millisecond
	rc.LeaderLeaseTimeout = 200 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
}

// newCluster starts n voters bootstrapped together; tweak, if not nil,
// adjusts each node's configuration.
func newCluster(t testing.TB, n int, tweak func(*Config)) *testCluster {
	c, servers := emptyCluster(t, n, tweak)
	for _, srv := range servers {
		c.start(srv.ID, func(cfg *Config) { cfg.Bootstrap = servers })
	}
	c.leader()
	return c
}

// emptyCluster returns a cluster with no node started and the servers
// n1..nn it is to have.
func emptyCluster(t testing.TB, n int, tweak func(*Config)) (*testCluster, []Server) {
	c := &testCluster{t: t, tweak: tweak, base: t.TempDir(), nodes: map[string]*Store{},
		trans: map[string]*raft.InmemTransport{}, dirs: map[string]string{}}
	// Registered after TempDir, so it runs before the directories go.
	t.Cleanup(func() {
		for _, id := range c.order {
			c.kill(id)
		}
	})
	var servers []Server
	for i := range n {
		id := fmt.Sprintf("n%d", i+1)
		servers = append(servers, Server{ID: id, Address: id})
	}
	return c, servers
}

// start opens node id (again, if it ran before: same directory) and
// connects it to every live node.
func (c *testCluster) start(id string, mod func(*Config)) *Store {
	c.t.Helper()
	dir, ok := c.dirs[id]
	if !ok {
		dir = filepath.Join(c.base, id)
		c.dirs[id] = dir
		c.order = append(c.order, id)
	}
	_, trans := raft.NewInmemTransport(raft.ServerAddress(id))
	cfg := testConfig(c.t, dir)
	cfg.NodeID = id
	cfg.Transport = trans
	cfg.Forwarder = memForwarder{c}
	cfg.ApplyTimeout = 5 * time.Second
	cfg.tune = fastRaft
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	if mod != nil {
		mod(&cfg)
	}
	c.mu.Lock()
	c.trans[id] = trans
	c.mu.Unlock()
	c.connect(id)
	s, err := Open(cfg)
	if err != nil {
		c.t.Fatalf("Open(%s): %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id] = s
	c.mu.Unlock()
	return s
}

// connect links id's transport with every other live node's, both ways.
func (c *testCluster) connect(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for other, tr := range c.trans {
		if other != id {
			c.trans[id].Connect(raft.ServerAddress(other), tr)
			tr.Connect(raft.ServerAddress(id), c.trans[id])
		}
	}
}

// disconnect cuts id off from every other node.
func (c *testCluster) disconnect(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.trans[id].DisconnectAll()
	for other, tr := range c.trans {
		if other != id {
			tr.Disconnect(raft.ServerAddress(id))
		}
	}
}

// kill closes node id (if it runs) and cuts it off.
func (c *testCluster) kill(id string) {
	c.mu.Lock()
	s := c.nodes[id]
	delete(c.nodes, id)
	c.mu.Unlock()
	if s == nil {
		return
	}
	c.disconnect(id)
	if err := s.Close(); err != nil {
		c.t.Errorf("Close(%s): %v", id, err)
	}
	c.mu.Lock()
	delete(c.trans, id)
	c.mu.Unlock()
}

func (c *testCluster) node(id string) *Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// live returns the running nodes in creation order.
func (c *testCluster) live() []*Store {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Store
	for _, id := range c.order {
		if s := c.nodes[id]; s != nil {
			out = append(out, s)
		}
	}
	return out
}

// leader waits until one live node leads and every live voter knows it.
func (c *testCluster) leader() *Store {
	c.t.Helper()
	var leader *Store
	c.eventually(10*time.Second, "a leader every node knows", func() bool {
		leader = nil
		for _, s := range c.live() {
			if s.raft.State() == raft.Leader {
				leader = s
			}
		}
		if leader == nil {
			return false
		}
		for _, s := range c.live() {
			if _, id := s.raft.LeaderWithID(); string(id) != leader.cfg.NodeID {
				return false
			}
		}
		return true
	})
	return leader
}

// followers returns the live nodes but the leader.
func (c *testCluster) followers() []*Store {
	l := c.leader()
	return slices.DeleteFunc(c.live(), func(s *Store) bool { return s == l })
}

// converge waits until every live node has applied what the leader has, and
// checks that they then hold the same bytes.
func (c *testCluster) converge() {
	c.t.Helper()
	l := c.leader()
	want, err := l.fsm.appliedIndex()
	if err != nil {
		c.t.Fatal(err)
	}
	c.eventually(15*time.Second, fmt.Sprintf("every node applied index %d", want), func() bool {
		for _, s := range c.live() {
			if got, err := s.fsm.appliedIndex(); err != nil || got < want {
				return false
			}
		}
		return true
	})
	ref := dump(c.t, l.fsm)
	for _, s := range c.live() {
		if got := dump(c.t, s.fsm); !maps.Equal(got, ref) {
			c.t.Fatalf("%s holds %d keys, leader %s %d: states differ", s.cfg.NodeID, len(got), l.cfg.NodeID, len(ref))
		}
	}
}

func (c *testCluster) eventually(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("not after %s: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// memForwarder hands a write to the leader's ApplyForwarded, sending the
// result back as a code and a message as a real RPC would.
type memForwarder struct{ c *testCluster }

func (f memForwarder) Forward(ctx context.Context, leader Server, cmd []byte) error {
	s := f.c.node(leader.ID)
	if s == nil {
		return errors.New("connection refused")
	}
	err := s.ApplyForwarded(ctx, slices.Clone(cmd))
	if code := ErrorCode(err); code != "" {
		return &ForwardError{Code: code, Msg: err.Error()}
	}
	return nil
}

func wantMembers(t *testing.T, s *Store, want map[string]string) {
	t.Helper()
	members, err := s.Members()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range members {
		got[m.ID] = string(m.Suffrage)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("members seen by %s = %v, want %v", s.cfg.NodeID, got, want)
	}
}

func TestClusterWritesThroughFollowers(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	leader, fs := c.leader(), c.followers()
	a, b := manifest("lib/app", "a", ""), manifest("lib/app", "b", "")

	mustPut(t, fs[0], a, "v1")
	c.converge()
	for _, s := range c.live() {
		if d, err := s.ResolveTag("lib/app", "v1"); err != nil || d != a.Digest {
			t.Errorf("%s: ResolveTag(v1) = %s, %v; want %s", s.cfg.NodeID, d, err, a.Digest)
		}
		if got, err := s.Manifest("lib/app", a.Digest); err != nil || string(got.Body) != string(a.Body) {
			t.Errorf("%s: Manifest = %v", s.cfg.NodeID, err)
		}
	}

	mustPut(t, fs[1], b, "v1") // overwrite through the other follower
	blob := digest.FromString("layer")
	if err := fs[0].LinkBlob(ctx, "lib/app", blob, 7); err != nil {
		t.Fatal(err)
	}
	c.converge()
	for _, s := range c.live() {
		if d, _ := s.ResolveTag("lib/app", "v1"); d != b.Digest {
			t.Errorf("%s: v1 = %s after the overwrite, want %s", s.cfg.NodeID, d, b.Digest)
		}
		if size, err := s.BlobLink("lib/app", blob); err != nil || size != 7 {
			t.Errorf("%s: BlobLink = %d, %v", s.cfg.NodeID, size, err)
		}
	}

	if err := fs[0].DeleteTag(ctx, "lib/app", "v1"); err != nil {
		t.Fatal(err)
	}
	c.converge()
	for _, s := range c.live() {
		_, err := s.ResolveTag("lib/app", "v1")
		wantNotFound(t, s.cfg.NodeID+": ResolveTag of a deleted tag", err)
	}

	// The FSM's errors survive the trip back from the leader.
	err := fs[0].DeleteTag(ctx, "lib/app", "v1")
	var fe *ForwardError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &fe) || fe.Code != CodeNotFound {
		t.Errorf("DeleteTag of a missing tag through a follower = %v, want a forwarded ErrNotFound", err)
	}
	wantNotFound(t, "forwarded DeleteManifest of a missing manifest", fs[1].DeleteManifest(ctx, "lib/app", digest.FromString("x")))
	wantNotFound(t, "forwarded UnlinkBlob of a missing link", fs[1].UnlinkBlob(ctx, "nope", blob))
	// Invalid writes fail before they leave the node.
	if err := fs[0].DeleteTag(ctx, "lib/app", ""); err == nil || errors.As(err, &fe) {
		t.Errorf("invalid DeleteTag on a follower = %v, want a local error", err)
	}

	// The leader's side checks what it is given and never forwards again.
	for _, garbage := range [][]byte{nil, {99}, {byte(opDeleteTag), '{'}, append([]byte{byte(opDeleteTag)}, `{"repo":"r"}`...)} {
		if err := leader.ApplyForwarded(ctx, garbage); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("ApplyForwarded(%q) = %v, want ErrInvalidCommand", garbage, err)
		}
	}
	cmd, _ := command{Op: opLinkBlob, Repo: "r", Digest: blob, Size: 1}.Encode()
	if err := fs[0].ApplyForwarded(ctx, cmd); !errors.Is(err, ErrNotLeader) {
		t.Errorf("ApplyForwarded on a follower = %v, want ErrNotLeader", err)
	}

	if err := leader.Barrier(ctx); err != nil {
		t.Errorf("Barrier on the leader: %v", err)
	}
	if err := fs[0].Barrier(ctx); !errors.Is(err, ErrNotLeader) {
		t.Errorf("Barrier on a follower = %v, want ErrNotLeader", err)
	}
	for _, s := range c.live() {
		wantMembers(t, s, map[string]string{"n1": "Voter", "n2": "Voter", "n3": "Voter"})
	}
	for name, err := range map[string]error{
		"AddNonvoter":        fs[0].AddNonvoter(ctx, "n9", "n9"),
		"AddVoter":           fs[0].AddVoter(ctx, "n9", "n9"),
		"Promote":            fs[0].Promote(ctx, "n1"),
		"RemoveServer":       fs[0].RemoveServer(ctx, "n1"),
		"TransferLeadership": fs[0].TransferLeadership(ctx),
	} {
		if !errors.Is(err, ErrNotLeader) {
			t.Errorf("%s on a follower = %v, want ErrNotLeader", name, err)
		}
	}
}

func TestForwardErrorCodes(t *testing.T) {
	t.Parallel()
	for _, sentinel := range []error{ErrNotFound, ErrNotLeader, ErrInvalidCommand, context.Canceled, context.DeadlineExceeded} {
		err := fmt.Errorf("wrapped: %w", sentinel)
		back := &ForwardError{Code: ErrorCode(err), Msg: err.Error()}
		if !errors.Is(back, sentinel) {
			t.Errorf("%v did not survive as code %q", sentinel, back.Code)
		}
	}
	if got := ErrorCode(fmt.Errorf("x: %w", ErrClosed)); got != CodeNotLeader {
		t.Errorf("ErrorCode(ErrClosed) = %q, want %q", got, CodeNotLeader)
	}
	internal := &ForwardError{Code: ErrorCode(errors.New("disk on fire")), Msg: "disk on fire"}
	if internal.Code != CodeInternal || errors.Is(internal, ErrNotFound) || errors.Is(internal, ErrNotLeader) {
		t.Errorf("an unknown error became %+v", internal)
	}
	if ErrorCode(nil) != "" {
		t.Error("ErrorCode(nil) is not empty")
	}
}

func TestClusterNoLeaderNoForwarder(t *testing.T) {
	t.Parallel()
	// Without a Forwarder a follower refuses writes, as before.
	c := newCluster(t, 2, func(cfg *Config) { cfg.Forwarder = nil })
	f := c.followers()[0]
	if err := f.LinkBlob(ctx, "r", digest.FromString("x"), 1); !errors.Is(err, ErrNotLeader) {
		t.Errorf("write on a follower without a Forwarder = %v, want ErrNotLeader", err)
	}
	// Alone, the survivor of a two-voter cluster has no leader: ErrNotLeader.
	c.kill(c.leader().cfg.NodeID)
	c.eventually(5*time.Second, "the survivor forgets the leader", func() bool {
		_, id := f.raft.LeaderWithID()
		return id == ""
	})
	if err := f.LinkBlob(ctx, "r", digest.FromString("x"), 1); !errors.Is(err, ErrNotLeader) {
		t.Errorf("write without a leader = %v, want ErrNotLeader", err)
	}
}

// TestClusterFailoverAndMembership kills the leader during a stream of
// writes through a follower, then replaces it: remove the dead voter, add a
// fourth node as a non-voter, promote it, and hand leadership over.
func TestClusterFailoverAndMembership(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	old := c.leader()
	writer := c.followers()[0]

	var (
		mu    sync.Mutex
		acked []int
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		m := manifest("stream", "m", "")
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := writer.PutManifest(wctx, m, "t"+strconv.Itoa(i))
			cancel()
			if err == nil {
				mu.Lock()
				acked = append(acked, i)
				mu.Unlock()
			} else if !errors.Is(err, ErrNotLeader) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("write %d: %v", i, err)
			}
		}
	}()
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	c.eventually(5*time.Second, "writes before the kill", func() bool { return ackedCount() >= 20 })

	killed := time.Now()
	c.kill(old.cfg.NodeID)
	newLeader := c.leader()
	if d := time.Since(killed); d > 3*time.Second {
		t.Errorf("a new leader took %s", d)
	}
	before := ackedCount()
	c.eventually(5*time.Second, "writes after the failover", func() bool { return ackedCount() >= before+20 })
	close(stop)
	<-done
	c.converge()
	for _, s := range c.live() {
		for _, i := range acked {
			if _, err := s.ResolveTag("stream", "t"+strconv.Itoa(i)); err != nil {
				t.Fatalf("%s lost acknowledged write %d: %v", s.cfg.NodeID, i, err)
			}
		}
	}
	for _, s := range c.live() { // writes work through every survivor
		if err := s.LinkBlob(ctx, "after", digest.FromString(s.cfg.NodeID), 1); err != nil {
			t.Fatalf("write through %s after failover: %v", s.cfg.NodeID, err)
		}
	}

	// Remove the dead voter: two voters left, both live, so quorum holds.
	if err := newLeader.RemoveServer(ctx, old.cfg.NodeID); err != nil {
		t.Fatal(err)
	}
	if err := newLeader.RemoveServer(ctx, old.cfg.NodeID); err != nil {
		t.Errorf("removing a non-member: %v", err)
	}
	survivors := map[string]string{}
	for _, s := range c.live() {
		survivors[s.cfg.NodeID] = "Voter"
	}
	wantMembers(t, newLeader, survivors)
	mustPut(t, writer, manifest("after", "removal", ""), "v1")

	// A fourth node joins as a non-voter, catches up, and is promoted.
	n4 := c.start("n4", func(cfg *Config) { cfg.NoBootstrap = true })
	for range 2 { // joining is idempotent
		if err := newLeader.AddNonvoter(ctx, "n4", "n4"); err != nil {
			t.Fatal(err)
		}
	}
	survivors["n4"] = "Nonvoter"
	wantMembers(t, newLeader, survivors)
	c.converge()
	if err := newLeader.Promote(ctx, "n4"); err != nil {
		t.Fatal(err)
	}
	if err := newLeader.AddNonvoter(ctx, "n4", "n4"); err != nil { // no demotion
		t.Fatal(err)
	}
	survivors["n4"] = "Voter"
	wantMembers(t, newLeader, survivors)
	wantNotFound(t, "Promote of a non-member", newLeader.Promote(ctx, "n9"))
	mustPut(t, n4, manifest("after", "promotion", ""), "v2")
	c.converge()
	c.eventually(5*time.Second, "n4 sees itself as a voter", func() bool {
		m, err := n4.Members()
		return err == nil && slices.Contains(m, Member{ID: "n4", Address: "n4", Suffrage: "Voter"})
	})

	// Hand leadership over: another node leads and takes writes.
	if err := newLeader.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	if l := c.leader(); l == newLeader {
		t.Errorf("%s still leads after TransferLeadership", l.cfg.NodeID)
	}
	mustPut(t, newLeader, manifest("after", "transfer", ""), "v3")
	c.converge()
}

// TestClusterSnapshotCatchUp cuts a follower off while the log moves on and
// is compacted, so that on return it can only catch up by InstallSnapshot.
func TestClusterSnapshotCatchUp(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 32
		cfg.SnapshotInterval = 20 * time.Millisecond
	})
	leader := c.leader()
	mustPut(t, leader, manifest("r", "first", ""), "first")
	c.converge()
	lagger := c.followers()[0]
	lastSeen := lagger.raft.LastIndex()
	c.disconnect(lagger.cfg.NodeID)

	// The writers use both connected nodes (one forwards); the leader may
	// change under the load, so a write refused for want of a leader is
	// tried again.
	var connected []*Store
	for _, s := range c.live() {
		if s != lagger {
			connected = append(connected, s)
		}
	}
	const writes, workers = 2000, 16
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			s := connected[w%2]
			for i := w; i < writes; i += workers {
				m := manifest("r", strconv.Itoa(i%100), "")
				err := s.PutManifest(ctx, m, "t"+strconv.Itoa(i%500))
				for try := 0; errors.Is(err, ErrNotLeader) && try < 100; try++ {
					time.Sleep(20 * time.Millisecond)
					err = s.PutManifest(ctx, m, "t"+strconv.Itoa(i%500))
				}
				if err != nil {
					t.Errorf("write %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	c.eventually(5*time.Second, "the others compact their logs", func() bool {
		for _, s := range connected {
			if first, _ := (&logStore{db: s.raftDB}).FirstIndex(); first <= lastSeen+1 {
				return false
			}
		}
		return true
	})

	c.connect(lagger.cfg.NodeID)
	c.converge()
	snapIndex, _ := strconv.ParseUint(lagger.raft.Stats()["last_snapshot_index"], 10, 64)
	if snapIndex <= lastSeen {
		t.Errorf("the follower's last snapshot is at %d, not past its log at %d: no InstallSnapshot", snapIndex, lastSeen)
	}
	if d, err := lagger.ResolveTag("r", "t499"); err != nil || d != manifest("r", strconv.Itoa(1999%100), "").Digest {
		t.Errorf("ResolveTag(t499) on the follower = %s, %v", d, err)
	}
}

func TestBootstrapConfigValidation(t *testing.T) {
	t.Parallel()
	base := testConfig(t, t.TempDir())
	for name, servers := range map[string][]Server{
		"without this node": {{ID: "other", Address: "a"}},
		"repeated id":       {{ID: "node-1", Address: "a"}, {ID: "node-1", Address: "b"}},
		"empty address":     {{ID: "node-1", Address: ""}},
		"no transport":      {{ID: "node-1", Address: "a"}, {ID: "node-2", Address: "b"}},
	} {
		cfg := base
		cfg.Bootstrap = servers
		if cfg.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	cfg := base
	cfg.Bootstrap = []Server{{ID: "node-1", Address: "node-1"}}
	cfg.NoBootstrap = true
	if cfg.Validate() == nil {
		t.Error("Bootstrap with NoBootstrap: accepted")
	}
}

// TestRestartDoesNotBootstrapAgain restarts a member of a three-node
// cluster with a Bootstrap naming only itself: it must rejoin the cluster it
// belongs to, not found a second one.
func TestRestartDoesNotBootstrapAgain(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	f := c.followers()[0]
	id := f.cfg.NodeID
	mustPut(t, f, manifest("r", "before", ""), "v1")
	c.kill(id)
	mustPut(t, c.live()[0], manifest("r", "while-down", ""), "v2")
	f = c.start(id, func(cfg *Config) { cfg.Bootstrap = []Server{{ID: id, Address: id}} })
	wantMembers(t, f, map[string]string{"n1": "Voter", "n2": "Voter", "n3": "Voter"})
	c.converge()
	if _, err := f.ResolveTag("r", "v2"); err != nil {
		t.Errorf("restarted node missed a write: %v", err)
	}
}

// TestBootstrapByOneNode is the --bootstrap-expect shape: five nodes start
// at once, only the chosen one bootstraps (with all five), the others start
// empty (NoBootstrap). They form exactly one cluster.
func TestBootstrapByOneNode(t *testing.T) {
	t.Parallel()
	c, servers := emptyCluster(t, 5, nil)
	for i, srv := range servers {
		c.start(srv.ID, func(cfg *Config) {
			if i == 0 {
				cfg.Bootstrap = servers
			} else {
				cfg.NoBootstrap = true
			}
		})
	}
	mustPut(t, c.followers()[2], manifest("r", "m", ""), "v1")
	c.converge()
	want := map[string]string{}
	for _, srv := range servers {
		want[srv.ID] = "Voter"
	}
	for _, s := range c.live() {
		wantMembers(t, s, want)
	}
}
