package consensus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/opencontainers/go-digest"
)

// tailHarness runs metadata followers of a testCluster: real stores on
// badger in the test's directory, tailing the cluster's stores over
// net.Pipe (ServeTail on one end, the follower on the other) instead of
// libp2p streams. Followers are not in the cluster's node map: they are no
// Raft members, and the cluster's helpers wait for members only.
type tailHarness struct {
	t   testing.TB
	c   *testCluster
	ctx context.Context // ends the servers when the test ends
	wg  sync.WaitGroup  // ServeTail goroutines

	mu        sync.Mutex
	followers map[string]*Store
	dirs      map[string]string
	refused   map[string]bool // members whose dials fail
	dials     map[string]int  // dials per member
}

// testHeartbeat is the followers' heartbeat: a silent source is dropped
// after three (tailSilence).
const testHeartbeat = 100 * time.Millisecond

func newTailHarness(t testing.TB, c *testCluster) *tailHarness {
	ctx, cancel := context.WithCancel(context.Background())
	h := &tailHarness{t: t, c: c, ctx: ctx, followers: map[string]*Store{}, dirs: map[string]string{},
		refused: map[string]bool{}, dials: map[string]int{}}
	// Registered after the cluster's: runs before its nodes close.
	t.Cleanup(func() {
		h.mu.Lock()
		ids := slices.Collect(maps.Keys(h.followers))
		h.mu.Unlock()
		for _, id := range ids {
			h.stop(id)
		}
		cancel()
		h.wg.Wait()
	})
	return h
}

// DialTail connects to the cluster's store member.ID over a pipe.
func (h *tailHarness) DialTail(ctx context.Context, member Server) (io.ReadWriteCloser, error) {
	h.mu.Lock()
	h.dials[member.ID]++
	refused := h.refused[member.ID]
	h.mu.Unlock()
	s := h.c.node(member.ID)
	if s == nil || refused {
		return nil, fmt.Errorf("dialing %s: connection refused", member.ID)
	}
	server, client := net.Pipe()
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		if err := s.ServeTail(h.ctx, server, nil); err != nil {
			h.t.Logf("ServeTail(%s): %v", member.ID, err)
		}
	}()
	return client, nil
}

// open opens follower id (again, if it ran before: same directory), not
// yet following. mod, if not nil, adjusts its configuration.
func (h *tailHarness) open(id string, mod func(*Config)) *Store {
	h.t.Helper()
	h.mu.Lock()
	dir, ok := h.dirs[id]
	if !ok {
		dir = filepath.Join(h.c.base, id)
		h.dirs[id] = dir
	}
	h.mu.Unlock()
	cfg := testConfig(h.t, dir)
	cfg.NodeID = id
	cfg.NoBootstrap = true
	cfg.TailDialer = h
	cfg.tailHeartbeat = testHeartbeat
	cfg.ApplyTimeout = 5 * time.Second
	cfg.tune = fastRaft
	cfg.Forwarder = &waitingForwarder{c: h.c, self: func() *Store { return h.follower(id) }}
	if h.c.tweak != nil {
		h.c.tweak(&cfg)
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		h.t.Fatalf("Open(%s): %v", id, err)
	}
	h.mu.Lock()
	h.followers[id] = s
	h.mu.Unlock()
	return s
}

// start opens follower id and follows the cluster's voters.
func (h *tailHarness) start(id string) *Store {
	h.t.Helper()
	s := h.open(id, nil)
	if err := s.Follow(h.members()); err != nil {
		h.t.Fatalf("Follow on %s: %v", id, err)
	}
	return s
}

func (h *tailHarness) follower(id string) *Store {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.followers[id]
}

// stop closes follower id.
func (h *tailHarness) stop(id string) {
	h.mu.Lock()
	s := h.followers[id]
	delete(h.followers, id)
	h.mu.Unlock()
	if s != nil {
		if err := s.Close(); err != nil {
			h.t.Errorf("Close(%s): %v", id, err)
		}
	}
}

func (h *tailHarness) refuse(id string, refused bool) {
	h.mu.Lock()
	h.refused[id] = refused
	h.mu.Unlock()
}

// members are the servers of the cluster, as a node would learn them.
func (h *tailHarness) members() []Server {
	var out []Server
	for _, id := range h.c.order {
		out = append(out, Server{ID: id, Address: id})
	}
	return out
}

// caughtUp waits until follower s applied what the leader did and knows
// the leader, and checks they hold the same bytes.
func (h *tailHarness) caughtUp(s *Store) {
	h.t.Helper()
	l := h.leader()
	want := l.AppliedIndex()
	h.c.eventually(15*time.Second, fmt.Sprintf("%s applied index %d and knows leader %s", s.cfg.NodeID, want, l.cfg.NodeID), func() bool {
		return s.AppliedIndex() >= want && s.Status().LeaderID == l.cfg.NodeID
	})
	if got, ref := dump(h.t, s.fsm), dump(h.t, l.fsm); !maps.Equal(got, ref) {
		h.t.Fatalf("follower %s holds %d keys, leader %s %d: states differ", s.cfg.NodeID, len(got), l.cfg.NodeID, len(ref))
	}
}

// leader waits until a live cluster node leads (c.leader also waits until
// every live node knows it, which a follower started as a cluster node
// does not).
func (h *tailHarness) leader() *Store {
	h.t.Helper()
	var l *Store
	h.c.eventually(10*time.Second, "a leader", func() bool {
		for _, s := range h.c.live() {
			if s.Status().State == Leader {
				l = s
				return true
			}
		}
		return false
	})
	return l
}

// waitingForwarder forwards like memForwarder, then waits until the
// follower applied the leader's index, as the node's forwarder does: the
// write is readable on the follower when the call returns.
type waitingForwarder struct {
	c    *testCluster
	self func() *Store
}

func (f *waitingForwarder) Forward(ctx context.Context, leader Server, cmd []byte) error {
	l := f.c.node(leader.ID)
	if err := (memForwarder{f.c}).Forward(ctx, leader, cmd); err != nil {
		return err
	}
	if l == nil {
		return errors.New("the leader closed")
	}
	return f.self().WaitApplied(ctx, l.AppliedIndex())
}

// putN writes n manifests with tags through s.
func putN(t testing.TB, s *Store, repo string, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		mustPut(t, s, manifest(repo, fmt.Sprint(i), ""), fmt.Sprintf("v%d", i))
	}
}

func TestTailFollowersReadAndWrite(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	h := newTailHarness(t, c)
	leader := c.leader()
	putN(t, leader, "before", 0, 5)
	f1, f2 := h.start("f1"), h.start("f2")

	putN(t, leader, "lib/app", 0, 10)
	h.caughtUp(f1)
	h.caughtUp(f2)
	for _, f := range []*Store{f1, f2} {
		if d, err := f.ResolveTag("lib/app", "v9"); err != nil || d != manifest("lib/app", "9", "").Digest {
			t.Errorf("%s: ResolveTag(v9) = %s, %v", f.cfg.NodeID, d, err)
		}
	}

	// A write on a follower is forwarded to the leader and readable on
	// that follower when the call returns.
	for i := range 5 {
		m := manifest("from/follower", fmt.Sprint(i), "")
		mustPut(t, f1, m, "latest")
		if d, err := f1.ResolveTag("from/follower", "latest"); err != nil || d != m.Digest {
			t.Fatalf("right after the write through f1: ResolveTag = %s, %v; want %s", d, err, m.Digest)
		}
	}
	if err := f2.LinkBlob(ctx, "from/follower", digest.FromString("layer"), 42); err != nil {
		t.Fatalf("LinkBlob through f2: %v", err)
	}
	if size, err := f2.BlobLink("from/follower", digest.FromString("layer")); err != nil || size != 42 {
		t.Errorf("BlobLink on f2 right after its write = %d, %v", size, err)
	}
	wantNotFound(t, "a forwarded delete of a missing tag", f2.DeleteTag(ctx, "from/follower", "nope"))
	h.caughtUp(f1)
	h.caughtUp(f2)

	want := map[string]string{"n1": "Voter", "n2": "Voter", "n3": "Voter"}
	for _, f := range []*Store{f1, f2} {
		if !f.Following() {
			t.Errorf("%s: Following() = false", f.cfg.NodeID)
		}
		wantMembers(t, f, want)
		st, ts := f.Status(), f.TailStatus()
		if !st.Following || st.LeaderID != leader.cfg.NodeID || st.Term == 0 || st.Tail.Source == "" {
			t.Errorf("%s: Status = %+v", f.cfg.NodeID, st)
		}
		// The default order spares the leader.
		if ts.Source == leader.cfg.NodeID || ts.Applied < leader.AppliedIndex() || ts.LastMessage.IsZero() || ts.Snapshots != 0 {
			t.Errorf("%s: TailStatus = %+v (leader %s at %d)", f.cfg.NodeID, ts, leader.cfg.NodeID, leader.AppliedIndex())
		}
		if !f.Ready() {
			t.Errorf("%s: not Ready while following a cluster with a leader", f.cfg.NodeID)
		}
		if w, _ := f.Watch(ctx); w.LeaderID != leader.cfg.NodeID {
			t.Errorf("%s: Watch leader = %q, want %s", f.cfg.NodeID, w.LeaderID, leader.cfg.NodeID)
		}
		// Followers do not relay.
		a, b := net.Pipe()
		if err := f.ServeTail(ctx, a, nil); !errors.Is(err, ErrFollowing) {
			t.Errorf("%s: ServeTail on a follower = %v, want ErrFollowing", f.cfg.NodeID, err)
		}
		b.Close()
	}
	// Members: no follower joined the Raft configuration.
	wantMembers(t, leader, want)
	if err := leader.Follow(h.members()); !errors.Is(err, ErrMember) {
		t.Errorf("Follow on a member = %v, want ErrMember", err)
	}
	if leader.Following() || leader.FollowedBefore() {
		t.Error("a member reports following")
	}
	// Idle: the heartbeats keep the stream (more than tailSilence of them).
	time.Sleep(5 * testHeartbeat)
	if ts := f1.TailStatus(); ts.Reconnects != 0 || time.Since(ts.LastMessage) > 2*testHeartbeat {
		t.Errorf("f1 after an idle while: %+v", ts)
	}
}

func TestTailCatchUpByRange(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	h := newTailHarness(t, c)
	f := h.start("f1")
	putN(t, c.leader(), "r", 0, 5)
	h.caughtUp(f)
	h.stop("f1")

	putN(t, c.leader(), "r", 5, 200)
	f = h.open("f1", nil)
	if !f.FollowedBefore() {
		t.Fatal("FollowedBefore() = false on a restarted follower")
	}
	if f.Following() || f.TailConfiguration() != nil {
		t.Fatal("following before Follow")
	}
	if err := f.Follow(nil); err != nil {
		t.Fatalf("Follow(nil) on a restarted follower: %v", err)
	}
	h.caughtUp(f)
	if ts := f.TailStatus(); ts.Snapshots != 0 {
		t.Errorf("caught up by range with %d snapshots", ts.Snapshots)
	}
	if d, err := f.ResolveTag("r", "v204"); err != nil || d != manifest("r", "204", "").Digest {
		t.Errorf("ResolveTag(v204) = %s, %v", d, err)
	}
}

func TestTailCatchUpBySnapshot(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 32
		cfg.SnapshotInterval = 20 * time.Millisecond
		cfg.TrailingLogs = 8
	})
	h := newTailHarness(t, c)
	f := h.start("f1")
	putN(t, c.leader(), "r", 0, 5)
	h.caughtUp(f)
	behind := f.TailStatus().Applied
	h.stop("f1")

	putN(t, c.leader(), "r", 5, 150)
	c.eventually(15*time.Second, "every member compacted its log past the follower", func() bool {
		for _, s := range c.live() {
			if first, err := s.logs.FirstIndex(); err != nil || first <= behind+1 {
				return false
			}
		}
		return true
	})
	f = h.open("f1", nil)
	if err := f.Follow(nil); err != nil {
		t.Fatal(err)
	}
	h.caughtUp(f)
	if ts := f.TailStatus(); ts.Snapshots != 1 {
		t.Errorf("caught up with %d snapshots, want 1: %+v", ts.Snapshots, ts)
	}
	// Reads agree with the leader's.
	l := c.leader()
	for _, tag := range []string{"v0", "v77", "v154"} {
		want, err1 := l.ResolveTag("r", tag)
		got, err2 := f.ResolveTag("r", tag)
		if err1 != nil || err2 != nil || got != want {
			t.Errorf("ResolveTag(%s): follower %s, %v; leader %s, %v", tag, got, err2, want, err1)
		}
	}
	wantMembers(t, f, map[string]string{"n1": "Voter", "n2": "Voter", "n3": "Voter"})
	// And it goes on from the log.
	putN(t, l, "r", 200, 3)
	h.caughtUp(f)
}

func TestTailSourceDies(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	h := newTailHarness(t, c)
	f := h.start("f1")
	putN(t, c.leader(), "r", 0, 3)
	h.caughtUp(f)
	source := f.TailStatus().Source
	if source == "" || source == c.leader().cfg.NodeID {
		t.Fatalf("source %q (leader %s)", source, c.leader().cfg.NodeID)
	}
	h.refuse(source, true) // it stays down for the follower
	c.kill(source)
	putN(t, c.leader(), "r", 3, 20) // written during the outage
	h.caughtUp(f)
	ts := f.TailStatus()
	if ts.Source == source || ts.Source == "" || ts.Reconnects == 0 {
		t.Errorf("after its source died: %+v", ts)
	}
}

func TestTailLeaderChange(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	h := newTailHarness(t, c)
	f := h.start("f1")
	old := c.leader()
	h.caughtUp(f) // it knows the leader
	putN(t, f, "r", 0, 2)
	// Code that waits for a leader (forwarding, read index) watches.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, changes := f.Watch(wctx)
	if st.LeaderID != old.cfg.NodeID {
		t.Fatalf("Watch on the follower: leader %q, want %s", st.LeaderID, old.cfg.NodeID)
	}
	h.refuse(old.cfg.NodeID, true)
	c.kill(old.cfg.NodeID)
	next := c.leader()
	for st.LeaderID != next.cfg.NodeID {
		var open bool
		if st, open = <-changes; !open {
			t.Fatalf("the follower's Watch ended before it named the new leader %s", next.cfg.NodeID)
		}
	}
	if f.Status().LeaderID != next.cfg.NodeID {
		t.Errorf("Status names leader %q after Watch named %s", f.Status().LeaderID, next.cfg.NodeID)
	}
	m := manifest("r", "after", "")
	mustPut(t, f, m, "after")
	if d, err := f.ResolveTag("r", "after"); err != nil || d != m.Digest {
		t.Errorf("ResolveTag right after the write = %s, %v", d, err)
	}
	h.caughtUp(f)
	if f.Status().Term < next.Status().Term {
		t.Errorf("follower term %d, leader's %d", f.Status().Term, next.Status().Term)
	}
}

// TestTailStopFollowingThenNonvoter turns a follower into a Raft member:
// raft takes over from the tail without applying an entry twice, whether
// the node stops following first (as it should) or is added while it
// follows (the tail then stops at the configuration that names it).
func TestTailStopFollowingThenNonvoter(t *testing.T) {
	t.Parallel()
	for _, stopFirst := range []bool{true, false} {
		t.Run(fmt.Sprintf("StopFollowing first %v", stopFirst), func(t *testing.T) {
			t.Parallel()
			testTailBecomesMember(t, stopFirst)
		})
	}
}

func testTailBecomesMember(t *testing.T, stopFirst bool) {
	c := newCluster(t, 3, nil)
	h := newTailHarness(t, c)
	leader := c.leader()
	putN(t, leader, "r", 0, 10)
	// Started as a cluster node (its raft transport reaches the others),
	// not bootstrapped: a follower until it is added.
	f := c.start("f1", func(cfg *Config) {
		cfg.NoBootstrap, cfg.Bootstrap = true, nil
		cfg.TailDialer = h
		cfg.tailHeartbeat = testHeartbeat
	})
	if err := f.Follow(h.members()[:3]); err != nil {
		t.Fatal(err)
	}
	h.caughtUp(f)

	// Every applied event from now on, to check for a second apply.
	wctx, cancel := context.WithCancel(context.Background())
	cur, events := f.WatchApplied(wctx)
	var seen []Applied
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for a := range events {
			seen = append(seen, a)
		}
	}()
	putN(t, leader, "r", 10, 5)
	h.caughtUp(f)
	if stopFirst {
		f.StopFollowing()
		if f.Following() || f.Status().Following {
			t.Fatal("still following after StopFollowing")
		}
	}
	if err := leader.AddNonvoter(ctx, "f1", "f1"); err != nil {
		t.Fatal(err)
	}
	putN(t, leader, "r", 15, 5)
	c.converge() // f1 is a member now: every node applied the same
	c.eventually(5*time.Second, "the tail stopped", func() bool { return !f.Following() })
	wantMembers(t, f, map[string]string{"n1": "Voter", "n2": "Voter", "n3": "Voter", "f1": "Nonvoter"})
	if err := f.Follow(h.members()); !errors.Is(err, ErrMember) {
		t.Errorf("Follow on a node that became a member = %v, want ErrMember", err)
	}
	if f.FollowedBefore() {
		t.Error("FollowedBefore() on a member")
	}
	putN(t, leader, "r", 20, 2)
	c.converge()
	cancel()
	<-collected
	last := cur.Index
	for _, a := range seen {
		if a.Kind == KindRestore {
			last = a.Index
			continue
		}
		if a.Index <= last {
			t.Errorf("entry %d applied after %d: applied twice or out of order (%v)", a.Index, last, seen)
		}
		last = a.Index
	}
	if last < leader.AppliedIndex() {
		t.Errorf("saw entries up to %d, leader at %d", last, leader.AppliedIndex())
	}
}

func TestTailFollowErrors(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, nil)
	h := newTailHarness(t, c)
	f := h.open("f1", nil)
	if err := f.Follow(nil); !errors.Is(err, ErrNoTailSource) {
		t.Errorf("Follow(nil) with nothing learned = %v, want ErrNoTailSource", err)
	}
	if err := f.Follow([]Server{{ID: "f1", Address: "f1"}}); !errors.Is(err, ErrNoTailSource) {
		t.Errorf("Follow(itself) = %v, want ErrNoTailSource", err)
	}
	if f.FollowedBefore() || f.Following() {
		t.Error("following without a source")
	}
	if err := c.node("n1").Follow(h.members()); err == nil {
		t.Error("Follow on a store without a TailDialer succeeded")
	}
	// A second Follow replaces the members; Close stops the tail.
	if err := f.Follow(h.members()); err != nil {
		t.Fatal(err)
	}
	if err := f.Follow(h.members()); err != nil {
		t.Errorf("Follow while following: %v", err)
	}
	h.caughtUp(f)
	h.stop("f1")
	if f.Following() {
		t.Error("following after Close")
	}
	if err := f.Follow(h.members()); !errors.Is(err, ErrClosed) {
		t.Errorf("Follow after Close = %v, want ErrClosed", err)
	}
}

// hostileDialer serves the member "evil" with a fake server that breaks
// the protocol as behave says; every other member is the harness's.
type hostileDialer struct {
	h      *tailHarness
	behave func(w io.Writer, req tailRequest) error

	mu    sync.Mutex
	dials int
}

func (d *hostileDialer) DialTail(ctx context.Context, member Server) (io.ReadWriteCloser, error) {
	if member.ID != "evil" {
		return d.h.DialTail(ctx, member)
	}
	d.mu.Lock()
	d.dials++
	d.mu.Unlock()
	server, client := net.Pipe()
	d.h.wg.Add(1)
	go func() {
		defer d.h.wg.Done()
		defer server.Close()
		req, err := readTailRequest(server)
		if err != nil {
			return
		}
		if err := d.behave(server, req); err != nil {
			return // the follower hung up: what it should do
		}
		_, _ = io.Copy(io.Discard, server) // until the follower closes
	}()
	return client, nil
}

// writeRawFrame writes a frame of any type, which writeFrame refuses.
func writeRawFrame(w io.Writer, t byte, payload []byte) error {
	h := []byte{t, 0, 0, 0, byte(len(payload))}
	_, err := w.Write(append(h, payload...))
	return err
}

// evilFirst puts the hostile member first, whatever the default order.
func evilFirst(ms []Member) []Member {
	slices.SortStableFunc(ms, func(a, b Member) int {
		switch {
		case a.ID == b.ID:
			return 0
		case a.ID == "evil":
			return -1
		case b.ID == "evil":
			return 1
		}
		return 0
	})
	return ms
}

// snapshotOf is the FSM snapshot stream of a state where an entry at
// index put the tag evil:pwned.
func snapshotOf(t *testing.T, index uint64) []byte {
	t.Helper()
	f := openFSM(t)
	if resp := f.Apply(&raft.Log{Index: index, Data: pwnedCommand(t)}); resp != nil {
		t.Fatalf("applying the bogus command: %v", resp)
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var b bytes.Buffer
	if err := snap.(*fsmSnapshot).write(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pwnedCommand tags evil:pwned: a follower that applies it was fooled.
func pwnedCommand(t *testing.T) []byte {
	t.Helper()
	b, err := putCommand(manifest("evil", "x", ""), []string{"pwned"}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeSnapshotFrames(w io.Writer, h tailSnapshot, content []byte, claimed uint64) error {
	if err := writeJSONFrame(w, frameSnapshot, h); err != nil {
		return err
	}
	for len(content) > 0 {
		n := min(len(content), tailChunk)
		if err := writeFrame(w, frameChunk, content[:n]); err != nil {
			return err
		}
		content = content[n:]
	}
	return writeFrame(w, frameSnapshotEnd, binary.BigEndian.AppendUint64(nil, claimed))
}

// TestTailRefusesHostileServer: a source that sends a gap, a stale entry,
// an oversized or unknown frame, bad entries or configuration, a rollback
// or corrupt snapshot, or nothing at all is dropped; the follower tails
// another member and its state is the cluster's, with nothing of the
// hostile source's in it.
func TestTailRefusesHostileServer(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	h := newTailHarness(t, c)
	putN(t, c.leader(), "r", 0, 3)
	pwned := pwnedCommand(t)

	cases := []struct {
		name   string
		behave func(t *testing.T, w io.Writer, req tailRequest) error
	}{
		{"gap", func(t *testing.T, w io.Writer, req tailRequest) error {
			return writeFrame(w, frameEntries, encodeEntries([]tailEntry{{Index: req.After + 2, Term: 1, Type: raft.LogCommand, Data: pwned}}))
		}},
		{"stale entry", func(t *testing.T, w io.Writer, req tailRequest) error {
			return writeFrame(w, frameEntries, encodeEntries([]tailEntry{{Index: req.After, Term: 1, Type: raft.LogCommand, Data: pwned}}))
		}},
		{"oversized frame", func(t *testing.T, w io.Writer, req tailRequest) error {
			_, err := w.Write([]byte{frameEntries, 0xff, 0xff, 0xff, 0xff})
			return err
		}},
		{"large frame cut short", func(t *testing.T, w io.Writer, req tailRequest) error {
			_, err := w.Write([]byte{frameEntries, 0x01, 0x40, 0, 0, 1, 2, 3})
			return err // then silence: the follower's watchdog ends it
		}},
		{"unknown frame", func(t *testing.T, w io.Writer, req tailRequest) error {
			return errors.Join(writeFrame(w, frameHeartbeat, nil), writeRawFrame(w, 99, []byte("x")))
		}},
		{"entry count above the payload", func(t *testing.T, w io.Writer, req tailRequest) error {
			return writeFrame(w, frameEntries, binary.AppendUvarint(nil, 1<<40))
		}},
		{"entry length above the payload", func(t *testing.T, w io.Writer, req tailRequest) error {
			b := encodeEntries([]tailEntry{{Index: req.After + 1, Term: 1, Type: raft.LogCommand, Data: pwned}})
			return writeFrame(w, frameEntries, b[:len(b)-10])
		}},
		{"bad configuration entry", func(t *testing.T, w io.Writer, req tailRequest) error {
			return writeFrame(w, frameEntries, encodeEntries([]tailEntry{{Index: req.After + 1, Term: 1, Type: raft.LogConfiguration, Data: []byte("\xc1garbage")}}))
		}},
		{"rollback snapshot", func(t *testing.T, w io.Writer, req tailRequest) error {
			return writeSnapshotFrames(w, tailSnapshot{Index: req.After - 1, Term: 1}, snapshotOf(t, 1), uint64(len(snapshotOf(t, 1))))
		}},
		{"snapshot of an older state", func(t *testing.T, w io.Writer, req tailRequest) error {
			s := snapshotOf(t, 1)
			return writeSnapshotFrames(w, tailSnapshot{Index: req.After + 1000, Term: 1}, s, uint64(len(s)))
		}},
		{"snapshot state beyond its index", func(t *testing.T, w io.Writer, req tailRequest) error {
			s := snapshotOf(t, req.After+1000)
			return writeSnapshotFrames(w, tailSnapshot{Index: req.After + 1, Term: 1}, s, uint64(len(s)))
		}},
		{"truncated snapshot", func(t *testing.T, w io.Writer, req tailRequest) error {
			s := snapshotOf(t, req.After+1)
			s = s[:len(s)-3]
			return writeSnapshotFrames(w, tailSnapshot{Index: req.After + 1, Term: 1}, s, uint64(len(s)))
		}},
		{"snapshot end that does not match", func(t *testing.T, w io.Writer, req tailRequest) error {
			s := snapshotOf(t, req.After+1)
			return writeSnapshotFrames(w, tailSnapshot{Index: req.After + 1, Term: 1}, s, uint64(len(s))+1)
		}},
		{"snapshot with too many servers", func(t *testing.T, w io.Writer, req tailRequest) error {
			s := snapshotOf(t, req.After+1)
			ms := make([]Member, maxTailServers+1)
			for i := range ms {
				ms[i] = Member{ID: fmt.Sprint(i), Address: "a"}
			}
			return writeSnapshotFrames(w, tailSnapshot{Index: req.After + 1, Term: 1, Members: ms}, s, uint64(len(s)))
		}},
		{"silent", func(t *testing.T, w io.Writer, req tailRequest) error { return nil }},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &hostileDialer{h: h, behave: func(w io.Writer, req tailRequest) error { return tc.behave(t, w, req) }}
			id := fmt.Sprintf("f%d", i)
			f := h.open(id, func(cfg *Config) { cfg.TailDialer, cfg.TailPrefer = d, evilFirst })
			defer h.stop(id)
			// Caught up from an honest member first, so that the
			// hostile one has something to roll back.
			if err := f.Follow(h.members()); err != nil {
				t.Fatal(err)
			}
			h.caughtUp(f)
			f.StopFollowing()
			putN(t, c.leader(), "r", 10*(i+1), 2)

			if err := f.Follow(append([]Server{{ID: "evil", Address: "evil"}}, h.members()...)); err != nil {
				t.Fatal(err)
			}
			h.caughtUp(f)
			d.mu.Lock()
			dials := d.dials
			d.mu.Unlock()
			ts := f.TailStatus()
			if dials == 0 || ts.Reconnects == 0 || ts.Source == "evil" || ts.Snapshots != 0 {
				t.Errorf("after the hostile source: %d dials to it, %+v", dials, ts)
			}
			_, err := f.ResolveTag("evil", "pwned")
			wantNotFound(t, "the hostile source's tag", err)
			if d, err := f.ResolveTag("r", fmt.Sprintf("v%d", 10*(i+1)+1)); err != nil || d == "" {
				t.Errorf("the cluster's write after the hostile source: %s, %v", d, err)
			}
		})
	}
}

func TestTailIgnoresAnOlderLeader(t *testing.T) {
	t.Parallel()
	s := openStore(t, testConfig(t, t.TempDir()))
	f := &follower{s: s}
	for _, step := range []struct {
		l    tailLeader
		want string
	}{
		{tailLeader{ID: "a", Address: "a", Term: 5}, "a"},
		{tailLeader{ID: "old", Address: "old", Term: 4}, "a"}, // a source that missed the election
		{tailLeader{Term: 5}, ""},                             // the same term, the leader lost
		{tailLeader{ID: "b", Address: "b", Term: 6}, "b"},
	} {
		f.setLeader(step.l)
		if f.status.LeaderID != step.want || f.status.Term < step.l.Term {
			t.Errorf("after %+v: leader %q term %d, want %q", step.l, f.status.LeaderID, f.status.Term, step.want)
		}
	}
}
