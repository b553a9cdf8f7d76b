package testnet_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/p2p"
	"github.com/meshreg/meshreg/testnet"
)

// The attacker below is what anyone on the network can run: a fresh
// libp2p host with libp2p's default configuration (no cluster key), on
// loopback. It speaks meshreg's wire formats as the code does (only the
// DHT key of a digest comes from package p2p).

// Protocol ids and wire formats of a meshreg node, as an attacker reads
// them off the code.
const (
	forwardProto   = "/meshreg/forward/1.0.0"
	memberProto    = "/meshreg/member/1.0.0"
	helloProto     = "/meshreg/hello/1.0.0"
	indexProto     = "/meshreg/index/1.0.0"
	infoProto      = "/meshreg/info/1.0.0"
	hasProto       = "/meshreg/has/1.0.0"
	replicateProto = "/meshreg/replicate/1.0.0"
	blobProto      = "/meshreg/blob/1.0.0"
	raftProto      = "/meshreg/raft/1.0.0"

	// Consensus command ops: one byte, then the command's JSON.
	opPutManifest = 1
	opDeleteTag   = 3
	opLinkBlob    = 4
)

// attacker is a libp2p host that is not a member of the cluster.
type attacker struct {
	t *testing.T
	h host.Host
}

func newAttacker(t *testing.T, nodes []*testnet.InProcessNode) *attacker {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	for _, n := range nodes {
		for _, a := range n.N.Host().Addrs() {
			info, err := peer.AddrInfoFromP2pAddr(a)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			err = h.Connect(ctx, *info)
			cancel()
			if err != nil {
				t.Fatalf("the attacker cannot even connect to %s: %v", info.ID, err)
			}
		}
	}
	return &attacker{t: t, h: h}
}

// request sends one length-prefixed message on proto and reads one
// length-prefixed answer (meshreg's request/response framing).
func (a *attacker) request(to peer.ID, proto protocol.ID, msg []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(a.t.Context(), 10*time.Second)
	defer cancel()
	s, err := a.h.NewStream(ctx, to, proto)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(msg)))
	if _, err := s.Write(append(n[:], msg...)); err != nil {
		return nil, err
	}
	_ = s.CloseWrite()
	if _, err := io.ReadFull(s, n[:]); err != nil {
		return nil, err
	}
	ans := make([]byte, min(binary.BigEndian.Uint32(n[:]), 1<<20))
	_, err = io.ReadFull(s, ans)
	return ans, err
}

// command encodes a consensus command as the forwarding protocol carries it.
func command(op byte, v any) []byte {
	b, _ := json.Marshal(v)
	return append([]byte{op}, b...)
}

func statusOf(t *testing.T, n *testnet.InProcessNode) testnet.NodeStatus {
	t.Helper()
	st, err := n.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func catalog(t *testing.T, n *testnet.InProcessNode) []string {
	t.Helper()
	code, _, body, err := testnet.NewClient(n.URL()).Get(t.Context(), "/v2/_catalog", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("catalog on %s: %d %v", n.Host(), code, err)
	}
	var c struct{ Repositories []string }
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	return c.Repositories
}

// TestHostilePeer: a host that is not a member tries every cluster
// protocol of a running 3-node cluster. Nothing it sends changes the
// cluster: the pushed tag stays, the catalog and the members do not
// change, no node follows it as leader, nobody's memory jumps, and it gets
// no answer from any protocol but a refused membership request.
func TestHostilePeer(t *testing.T) {
	nodes := testnet.StartInProcessCluster(t, 3, nil)
	plain := []*testnet.Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}
	leaderNode, _ := testnet.Leader(t, plain, 30*time.Second)
	var leader *testnet.InProcessNode
	var followers []*testnet.InProcessNode
	for _, n := range nodes {
		if n.Node == leaderNode {
			leader = n
		} else {
			followers = append(followers, n)
		}
	}
	const repo = "hostile/app"
	c := testnet.NewClient(leader.URL())
	manifest := smallImage(t, c, repo)
	pushed, err := c.PutManifest(t.Context(), repo, "v1", ocispec.MediaTypeImageManifest, manifest("1"))
	if err != nil {
		t.Fatal(err)
	}
	configDigest := digest.FromString(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	for _, n := range nodes {
		if !testnet.Eventually(20*time.Second, func() bool { return tagOn(t.Context(), n.Node, repo, "v1") == pushed.String() }) {
			t.Fatalf("%s never served %s:v1", n.Host(), repo)
		}
	}
	catalogBefore := catalog(t, followers[0])

	atk := newAttacker(t, nodes)
	fakeBlob := digest.FromString("not a blob anyone pushed")

	t.Run("forward", func(t *testing.T) {
		html := []byte("<html><script>alert(1)</script></html>")
		attempts := map[string][]byte{
			"delete tag":           command(opDeleteTag, map[string]any{"repo": repo, "tag": "v1"}),
			"text/html manifest":   command(opPutManifest, map[string]any{"repo": repo, "digest": digest.FromBytes(html), "tags": []string{"evil"}, "size": len(html), "mediaType": "text/html", "body": html}),
			"link a 1 TiB blob":    command(opLinkBlob, map[string]any{"repo": repo, "digest": fakeBlob, "size": int64(1) << 40}),
			"link into new repo":   command(opLinkBlob, map[string]any{"repo": "hostile/forwarded", "digest": configDigest, "size": 10}),
			"empty, to the leader": nil,
		}
		for name, cmd := range attempts {
			if ans, err := atk.request(leader.PeerID(), forwardProto, cmd); err == nil {
				t.Errorf("forward %s: the leader answered a non-member: %s", name, ans)
			}
		}
		for _, n := range nodes {
			if got := tagOn(t.Context(), n.Node, repo, "v1"); got != pushed.String() {
				t.Errorf("%s: %s:v1 is %q after the attack, want %s", n.Host(), repo, got, pushed)
			}
			if got := tagOn(t.Context(), n.Node, repo, "evil"); got != "" {
				t.Errorf("%s: the attacker's tag %s:evil exists (%s)", n.Host(), repo, got)
			}
			if code, size, _ := testnet.NewClient(n.URL()).HeadBlob(t.Context(), repo, fakeBlob); code != http.StatusNotFound {
				t.Errorf("%s: HEAD of the attacker's fake blob: %d, %d bytes; want 404", n.Host(), code, size)
			}
		}
	})

	t.Run("members-only protocols", func(t *testing.T) {
		hello, _ := json.Marshal(map[string]string{atk.h.ID().String(): "/ip4/127.0.0.1/tcp/1/p2p/" + atk.h.ID().String()})
		blobReq, _ := json.Marshal(map[string]any{"digest": configDigest})
		attempts := []struct {
			proto protocol.ID
			msg   []byte
		}{
			{hasProto, []byte(`{"digests":["` + configDigest.String() + `"]}`)},
			{replicateProto, []byte(`{"digest":"` + fakeBlob.String() + `","size":1099511627776}`)},
			{infoProto, nil},
			{indexProto, nil},
			{helloProto, hello},
			{blobProto, blobReq},
		}
		for _, n := range nodes {
			for _, a := range attempts {
				if ans, err := atk.request(n.PeerID(), a.proto, a.msg); err == nil {
					t.Errorf("%s on %s answered a non-member: %.200q", a.proto, n.Host(), ans)
				}
			}
		}
	})

	t.Run("claimed lengths cost nothing", func(t *testing.T) {
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		heapBefore := ms.HeapAlloc
		const streams, claim = 40, 32 << 20
		var open []network.Stream
		defer func() {
			for _, s := range open {
				_ = s.Reset()
			}
		}()
		for range streams {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			s, err := atk.h.NewStream(ctx, followers[0].PeerID(), forwardProto)
			cancel()
			if err != nil {
				continue
			}
			var n [4]byte
			binary.BigEndian.PutUint32(n[:], claim)
			_, _ = s.Write(append(n[:], 'x'))
			open = append(open, s)
		}
		// Give the node time to act on every claim (an old node allocates
		// at once); the streams stay open meanwhile.
		deadline := time.Now().Add(3 * time.Second)
		var grew int64
		for time.Now().Before(deadline) {
			runtime.ReadMemStats(&ms)
			grew = max(grew, int64(ms.HeapAlloc)-int64(heapBefore))
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("heap growth while %d streams claimed %d MiB each: %d MiB", streams, claim>>20, grew>>20)
		if grew > 128<<20 {
			t.Errorf("the heap grew by %d MiB while a non-member claimed %d x %d MiB", grew>>20, streams, claim>>20)
		}
	})

	t.Run("dht", func(t *testing.T) {
		var boot []peer.AddrInfo
		for _, n := range nodes {
			boot = append(boot, peer.AddrInfo{ID: n.PeerID(), Addrs: n.N.Host().LibP2P().Addrs()})
		}
		d, err := dht.New(atk.h, dht.Mode(dht.ModeServer), dht.ProtocolPrefix("/meshreg"), dht.BootstrapPeers(boot...))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_ = d.Bootstrap(t.Context())
		// Try to store a provider record for a blob the cluster holds:
		// were the attacker in the nodes' tables, fetches would ask it.
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		if key, err := p2p.DigestCID(configDigest); err == nil {
			_ = d.Provide(ctx, key, true)
		}
		joined := testnet.Eventually(5*time.Second, func() bool {
			for _, n := range nodes {
				if statusOf(t, n).DHTPeers > len(nodes)-1 {
					return true
				}
			}
			return false
		})
		if joined {
			t.Errorf("a non-member entered a node's DHT routing table")
		}
	})

	t.Run("member", func(t *testing.T) {
		victim := followers[1].PeerID().String()
		for _, to := range nodes {
			for _, req := range []map[string]string{
				{"op": "remove", "id": victim},
				{"op": "remove", "id": leader.PeerID().String()},
				{"op": "join", "id": victim, "address": "/ip4/127.0.0.1/tcp/1/p2p/" + victim},
			} {
				b, _ := json.Marshal(req)
				ans, err := atk.request(to.PeerID(), memberProto, b)
				if err != nil {
					continue // refused outright: fine too
				}
				var res struct{ Error string }
				if json.Unmarshal(ans, &res) != nil || res.Error == "" {
					t.Errorf("%s accepted %v from a non-member: %s", to.Host(), req, ans)
				} else if !strings.Contains(res.Error, "not admitted") {
					t.Errorf("%s refused %v, but not for being a non-member: %s", to.Host(), req, res.Error)
				}
			}
		}
		for _, n := range nodes {
			if got := len(statusOf(t, n).Raft.Members); got != 3 {
				t.Errorf("%s: %d members after a non-member asked to remove some, want 3", n.Host(), got)
			}
		}
	})

	t.Run("raft", func(t *testing.T) {
		target := followers[0]
		st := statusOf(t, target)
		layer := &attackerLayer{h: atk.h, done: make(chan struct{})}
		trans := raft.NewNetworkTransport(layer, 1, 5*time.Second, io.Discard)
		defer trans.Close()
		inject := command(opLinkBlob, map[string]any{"repo": "hostile/injected", "digest": configDigest, "size": 5})
		req := raft.AppendEntriesRequest{
			RPCHeader:    raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(atk.h.ID().String()), Addr: []byte(atk.h.ID().String())},
			Term:         st.Raft.Term + 1,
			PrevLogEntry: st.Raft.CommitIndex, PrevLogTerm: st.Raft.Term,
			Entries: []*raft.Log{{Index: st.Raft.CommitIndex + 1, Term: st.Raft.Term + 1, Type: raft.LogCommand, Data: inject,
				AppendedAt: time.Now()}},
			LeaderCommitIndex: st.Raft.CommitIndex + 1,
		}
		var resp raft.AppendEntriesResponse
		id := target.PeerID().String()
		err := trans.AppendEntries(raft.ServerID(id), raft.ServerAddress(id), &req, &resp)
		if err == nil {
			t.Errorf("a follower answered a non-member's AppendEntries (success %v, term %d)", resp.Success, resp.Term)
		}
		if after := statusOf(t, target); after.Raft.LeaderID == atk.h.ID().String() {
			t.Errorf("the follower follows the attacker (term %d, was %d)", after.Raft.Term, st.Raft.Term)
		}
		if slices.Contains(catalog(t, target), "hostile/injected") {
			t.Errorf("the injected repository is in the follower's catalog")
		}
	})

	// What a user would check afterwards, on every node. (The leader may
	// change under load, elections are normal; it must be one of ours.)
	testnet.WaitConverged(t, plain, 3, 3, 30*time.Second)
	for _, n := range nodes {
		st := statusOf(t, n)
		if !slices.ContainsFunc(nodes, func(m *testnet.InProcessNode) bool { return m.PeerID().String() == st.Raft.LeaderID }) {
			t.Errorf("%s: the leader is %q after the attack, not one of the three nodes", n.Host(), st.Raft.LeaderID)
		}
		if got := catalog(t, n); !slices.Equal(got, catalogBefore) {
			t.Errorf("%s: catalog %v after the attack, was %v", n.Host(), got, catalogBefore)
		}
		if got := tagOn(t.Context(), n.Node, repo, "v1"); got != pushed.String() {
			t.Errorf("%s: %s:v1 is %q after the attack, want %s", n.Host(), repo, got, pushed)
		}
	}
	// An operator sees the refusals in the metrics.
	var refused float64
	for _, n := range nodes {
		v, err := n.Metric(t.Context(), "meshreg_p2p_streams_refused_total")
		if err != nil {
			t.Fatal(err)
		}
		refused += v
	}
	t.Logf("streams refused by the nodes: %.0f", refused)
	if refused == 0 {
		t.Error("meshreg_p2p_streams_refused_total is 0 on every node after the attack")
	}
}

// attackerLayer lets hashicorp/raft's own NetworkTransport speak Raft to a
// node over the attacker's libp2p streams.
type attackerLayer struct {
	h    host.Host
	done chan struct{}
	once sync.Once
}

func (l *attackerLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	id, err := peer.Decode(string(addr))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := l.h.NewStream(ctx, id, raftProto)
	if err != nil {
		return nil, err
	}
	return attackerConn{s}, nil
}

func (l *attackerLayer) Accept() (net.Conn, error) {
	<-l.done
	return nil, net.ErrClosed
}

func (l *attackerLayer) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *attackerLayer) Addr() net.Addr { return fakeAddr(l.h.ID().String()) }

type attackerConn struct{ network.Stream }

func (c attackerConn) LocalAddr() net.Addr  { return fakeAddr(c.Conn().LocalPeer().String()) }
func (c attackerConn) RemoteAddr() net.Addr { return fakeAddr(c.Conn().RemotePeer().String()) }

type fakeAddr string

func (a fakeAddr) Network() string { return "libp2p" }
func (a fakeAddr) String() string  { return string(a) }

// TestRemoveLeaderFromLoopback: the admin endpoint works from the node's
// own machine, even for the leader itself: leadership moves first, the
// others keep taking writes, the removed node says so in its status, and
// restarted with --join it is a member again.
func TestRemoveLeaderFromLoopback(t *testing.T) {
	dirs := make([]string, 3)
	nodes := testnet.StartInProcessCluster(t, 3, func(i int, c *node.Config) { dirs[i] = c.DataDir })
	plain := []*testnet.Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}
	leaderNode, _ := testnet.Leader(t, plain, 30*time.Second)
	var leader *testnet.InProcessNode
	var leaderDir string
	var rest []*testnet.InProcessNode
	for i, n := range nodes {
		if n.Node == leaderNode {
			leader, leaderDir = n, dirs[i]
		} else {
			rest = append(rest, n)
		}
	}
	id := leader.PeerID().String()

	// The API listens on 127.0.0.1: this client is on loopback.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, leader.URL()+"/_meshreg/v1/members/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE the leader from loopback: %s %s", resp.Status, body)
	}

	testnet.WaitConverged(t, []*testnet.Node{rest[0].Node, rest[1].Node}, 2, 2, 30*time.Second)
	if st := statusOf(t, rest[0]); st.Raft.LeaderID == id {
		t.Fatalf("the removed node still leads in %s's view", rest[0].Host())
	}
	if !testnet.Eventually(20*time.Second, func() bool { return statusOf(t, leader).Removed }) {
		st := statusOf(t, leader)
		t.Fatalf("the removed node does not say it was removed: state %s, %d members", st.Raft.State, len(st.Raft.Members))
	}
	c := testnet.NewClient(rest[1].URL())
	manifest := smallImage(t, c, "removed/after")
	if _, err := c.PutManifest(t.Context(), "removed/after", "v1", ocispec.MediaTypeImageManifest, manifest("1")); err != nil {
		t.Fatalf("the two remaining members take no writes: %v", err)
	}

	// Restarted with --join, the removed node is a member again.
	leader.Stop()
	cfg := node.DefaultConfig()
	cfg.DataDir = leaderDir
	cfg.Join = []string{rest[0].URL()}
	cfg.JoinToken = testnet.JoinToken(t, rest[0].Node, time.Hour)
	cfg.StabilizationTime = testnet.HarnessStabilization
	back := testnet.StartInProcessNode(t, cfg)
	testnet.WaitConverged(t, []*testnet.Node{rest[0].Node, rest[1].Node, back.Node}, 3, 3, 60*time.Second)
	if st := statusOf(t, back); st.Removed || st.NodeID != id {
		t.Fatalf("after rejoining: node %s, removed %v", st.NodeID, st.Removed)
	}
	if !testnet.Eventually(20*time.Second, func() bool { return tagOn(t.Context(), back.Node, "removed/after", "v1") != "" }) {
		t.Fatal("the rejoined node never caught up with a write made while it was out")
	}
}

// TestStaleMemberHearsAnUnknownLeader: a member cut off while the
// membership changed comes back with an old configuration that does not
// name the leader elected meanwhile. Raft streams from peers outside a
// node's configuration are refused, so the member asks the members it
// knows; one vouches for the new leader, and the member catches up.
func TestStaleMemberHearsAnUnknownLeader(t *testing.T) {
	tweak := func(_ int, c *node.Config) { c.Voters = 5; c.DeadServerTimeout = 10 * time.Minute }
	first := testnet.StartInProcessCluster(t, 3, tweak)
	stale := first[2]
	testnet.Partition(t, []*testnet.InProcessNode{stale}, first[:2])

	all := append([]*testnet.InProcessNode{}, first...)
	var added []*testnet.InProcessNode
	for range 2 {
		cfg := node.DefaultConfig()
		tweak(0, &cfg)
		cfg.Join = []string{first[0].URL()}
		cfg.JoinToken = testnet.JoinToken(t, first[0].Node, time.Hour)
		cfg.StabilizationTime = testnet.HarnessStabilization
		n := testnet.StartInProcessNode(t, cfg)
		testnet.Partition(t, []*testnet.InProcessNode{stale}, []*testnet.InProcessNode{n})
		added = append(added, n)
		all = append(all, n)
	}
	live := []*testnet.Node{first[0].Node, first[1].Node, added[0].Node, added[1].Node}
	testnet.WaitConverged(t, live, 5, 5, 60*time.Second)

	// Move leadership to a member the stale node has never heard of, by
	// cutting off whichever old member leads until a new one does.
	isNew := func(id string) bool { return id == added[0].PeerID().String() || id == added[1].PeerID().String() }
	for round := 0; ; round++ {
		st := statusOf(t, added[0])
		if isNew(st.Raft.LeaderID) {
			break
		}
		if round == 10 {
			t.Fatalf("leadership never moved to a new member (leader %s)", st.Raft.LeaderID)
		}
		var old *testnet.InProcessNode
		for _, n := range first[:2] {
			if n.PeerID().String() == st.Raft.LeaderID {
				old = n
			}
		}
		if old == nil {
			time.Sleep(200 * time.Millisecond) // no leader yet: poll again
			continue
		}
		others := []*testnet.InProcessNode{}
		for _, n := range all {
			if n != old && n != stale {
				others = append(others, n)
			}
		}
		testnet.Partition(t, []*testnet.InProcessNode{old}, others)
		testnet.Eventually(20*time.Second, func() bool {
			id := statusOf(t, added[0]).Raft.LeaderID
			return id != "" && id != old.PeerID().String()
		})
		testnet.Heal(t, []*testnet.InProcessNode{old}, others)
	}
	c := testnet.NewClient(added[0].URL())
	manifest := smallImage(t, c, "stale/app")
	var d digest.Digest
	var err error
	if !testnet.Eventually(30*time.Second, func() bool {
		d, err = c.PutManifest(t.Context(), "stale/app", "v1", ocispec.MediaTypeImageManifest, manifest("1"))
		return err == nil
	}) {
		t.Fatalf("no write went through the four connected members: %v", err)
	}

	if st := statusOf(t, stale); len(st.Raft.Members) != 3 {
		t.Fatalf("the cut-off member already knows %d members; the test needs it to know only the first 3", len(st.Raft.Members))
	}
	testnet.Heal(t, []*testnet.InProcessNode{stale}, all[:2])
	testnet.Heal(t, []*testnet.InProcessNode{stale}, added)
	var leader string
	if !testnet.Eventually(60*time.Second, func() bool {
		st := statusOf(t, stale)
		leader = statusOf(t, added[0]).Raft.LeaderID
		return isNew(leader) && st.Raft.LeaderID == leader && len(st.Raft.Members) == 5 && tagOn(t.Context(), stale.Node, "stale/app", "v1") == d.String()
	}) {
		st := statusOf(t, stale)
		t.Fatalf("the stale member never followed the new leader %s: leader %q, %d members, state %s", leader, st.Raft.LeaderID, len(st.Raft.Members), st.Raft.State)
	}
}

// TestJoinThroughAFollower: a new node that joins through a follower is
// sent the log by the leader, a peer it never contacted; it admits the
// leader the join answer names, and catches up.
func TestJoinThroughAFollower(t *testing.T) {
	nodes := testnet.StartInProcessCluster(t, 3, nil)
	plain := []*testnet.Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}
	leader, followers := testnet.Leader(t, plain, 30*time.Second)
	c := testnet.NewClient(leader.URL())
	manifest := smallImage(t, c, "join/app")
	d, err := c.PutManifest(t.Context(), "join/app", "v1", ocispec.MediaTypeImageManifest, manifest("1"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Join = []string{followers[0].URL()}
	cfg.JoinToken = testnet.JoinToken(t, followers[0], time.Hour)
	cfg.StabilizationTime = testnet.HarnessStabilization
	joiner := testnet.StartInProcessNode(t, cfg)
	testnet.WaitConverged(t, append(plain, joiner.Node), 4, 3, 60*time.Second)
	if !testnet.Eventually(30*time.Second, func() bool { return tagOn(t.Context(), joiner.Node, "join/app", "v1") == d.String() }) {
		t.Fatal("the node that joined through a follower never caught up")
	}
}
