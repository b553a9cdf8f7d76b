package testnet_test

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet"
)

// memberProtocol is the membership protocol as an outsider sees it on the
// wire: one 4-byte big-endian length and a JSON request, answered the same
// way.
const memberProtocol = protocol.ID("/meshreg/member/1.0.0")

// outsider is a fresh libp2p host with go-libp2p's defaults (listening on
// loopback only) that is not a member of any cluster.
type outsider struct {
	t *testing.T
	h host.Host
}

func newOutsider(t *testing.T) *outsider {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return &outsider{t: t, h: h}
}

// ask sends one request on memberProtocol to the node whose multiaddr (with
// /p2p/) is addr and returns the "error" of its answer.
func (o *outsider) ask(ctx context.Context, addr string, req any) string {
	o.t.Helper()
	info, err := peer.AddrInfoFromString(addr)
	if err != nil {
		o.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := o.h.Connect(ctx, *info); err != nil {
		o.t.Fatalf("outsider: connect to %s: %v", addr, err)
	}
	s, err := o.h.NewStream(ctx, info.ID, memberProtocol)
	if err != nil {
		o.t.Fatalf("outsider: open %s: %v", memberProtocol, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(15 * time.Second))
	b, _ := json.Marshal(req)
	if _, err := s.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b)))); err != nil {
		o.t.Fatal(err)
	}
	if _, err := s.Write(b); err != nil {
		o.t.Fatal(err)
	}
	_ = s.CloseWrite()
	var n [4]byte
	if _, err := io.ReadFull(s, n[:]); err != nil {
		o.t.Fatalf("outsider: reading the answer: %v", err)
	}
	resp := make([]byte, min(binary.BigEndian.Uint32(n[:]), 64<<10))
	if _, err := io.ReadFull(s, resp); err != nil {
		o.t.Fatalf("outsider: reading the answer: %v", err)
	}
	var res struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(resp, &res); err != nil {
		o.t.Fatalf("outsider: answer %q: %v", resp, err)
	}
	return res.Error
}

// joinRequest is a join for the outsider itself.
func (o *outsider) joinRequest(token string) map[string]string {
	id := o.h.ID().String()
	return map[string]string{"op": "join", "id": id, "address": o.h.Addrs()[0].String() + "/p2p/" + id, "token": token}
}

// forgeToken makes a token in the join token format that claims issuer but
// is signed with the outsider's own key.
func (o *outsider) forgeToken(issuer string, exp time.Time) string {
	o.t.Helper()
	payload, _ := json.Marshal(map[string]any{"iss": issuer, "exp": exp.Unix(), "n": "00112233445566778899aabbccddeeff"})
	p := base64.RawURLEncoding.EncodeToString(payload)
	sig, err := o.h.Peerstore().PrivKey(o.h.ID()).Sign([]byte("meshreg join token v1\n" + p))
	if err != nil {
		o.t.Fatal(err)
	}
	return "mrj1." + p + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// assertAlone checks, for the duration given, that the node leads a
// cluster of itself alone.
func assertAlone(t *testing.T, n *testnet.Node, self string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		st, err := n.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Raft.Members) != 1 || st.Voters() != 1 || st.Raft.Members[0].ID != self || st.Raft.State != "Leader" {
			t.Fatalf("the one-node cluster changed: state %s, members %+v", st.Raft.State, st.Raft.Members)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestHostileJoinIsRefused: a one-node cluster with no cluster key admits
// no one without a valid join token. An outsider's join (no token, a
// forged one, one it signed itself, an expired one), a join in another
// peer's name and a removal of the leader are all refused with a message
// that says what to do; the outsider stays connected well past the
// stabilization time and the cluster keeps its one voter. A real node
// started with an expired token is refused too.
func TestHostileJoinIsRefused(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.StabilizationTime = time.Second
	victim := testnet.StartInProcessNode(t, cfg)
	st, err := victim.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	self := st.NodeID
	expired := testnet.JoinToken(t, victim.Node, time.Second)
	o := newOutsider(t)
	other := newOutsider(t)

	cases := []struct {
		name string
		req  any
		want []string // in the refusal
	}{
		{"no token", o.joinRequest(""), []string{"not admitted", "--join-token", "meshreg token create"}},
		{"garbage token", o.joinRequest("let-me-in"), []string{"not admitted", "not a meshreg join token"}},
		{"token forged in the leader's name", o.joinRequest(o.forgeToken(self, time.Now().Add(time.Hour))), []string{"not admitted", "invalid signature"}},
		{"token it signed itself", o.joinRequest(o.forgeToken(o.h.ID().String(), time.Now().Add(time.Hour))), []string{"not admitted", "not a member"}},
		{"join in another peer's name", other.joinRequest(""), []string{"not admitted", "as itself"}},
		{"remove the leader", map[string]string{"op": "remove", "id": self}, []string{"not admitted", "only members"}},
	}
	for _, tc := range cases {
		got := o.ask(t.Context(), st.RaftAddress, tc.req)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s: answer %q, want it to contain %q", tc.name, got, w)
			}
		}
	}
	time.Sleep(1100 * time.Millisecond) // the 1s token expires
	if got := o.ask(t.Context(), st.RaftAddress, o.joinRequest(expired)); !strings.Contains(got, "expired") {
		t.Errorf("expired token: answer %q, want it refused as expired", got)
	}
	// Connected all along, well past the stabilization time.
	assertAlone(t, victim.Node, self, 5*time.Second)

	// A real node with the expired token: refused, not a member.
	jc := node.DefaultConfig()
	jc.Join = []string{victim.URL()}
	jc.JoinToken = expired
	joiner := testnet.StartInProcessNode(t, jc)
	assertAlone(t, victim.Node, self, 3*time.Second)
	if js, err := joiner.Status(t.Context()); err != nil || len(js.Raft.Members) != 0 {
		t.Errorf("the refused joiner sees members %+v (%v)", js.Raft.Members, err)
	}
}

// TestJoinWithTokenPromotesOnlyToOddVoters: `meshreg token create` on the
// first node issues a token; a real second node started with
// --join-token joins as a non-voter and stays one (1 -> 2 voters would make
// either node's loss fatal), however long it is healthy; when a third
// joins, both are promoted: 1 -> 3.
func TestJoinWithTokenPromotesOnlyToOddVoters(t *testing.T) {
	testnet.RequireProcess(t)
	const stab = "1s"
	first := testnet.StartNode(t, testnet.Options{Args: []string{"--stabilization-time", stab}})
	cli := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: t.TempDir()}
	token := strings.TrimSpace(string(cli.Run("token", "create", "--node", first.URL(), "--ttl", "10m")))
	if !strings.HasPrefix(token, "mrj1.") {
		t.Fatalf("token create printed %q", token)
	}
	join := testnet.Options{Args: []string{"--stabilization-time", stab, "--join", first.URL()}, Env: []string{"MESHREG_JOIN_TOKEN=" + token}}
	second := testnet.StartNode(t, join)
	fs, err := first.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ss, err := second.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	testnet.WaitConverged(t, []*testnet.Node{first, second}, 2, 1, 30*time.Second)
	// Healthy and caught up for many stabilization times: still a non-voter.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		st, err := first.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Voters() != 1 || suffrage(st, ss.NodeID) != "Nonvoter" {
			t.Fatalf("with two nodes: members %+v, want %s the only voter", st.Raft.Members, fs.NodeID)
		}
	}

	third := testnet.StartNode(t, join)
	testnet.WaitConverged(t, []*testnet.Node{first, second, third}, 3, 3, 60*time.Second)
	for _, n := range []*testnet.Node{first, second, third} {
		st, err := n.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range st.Raft.Members {
			if m.Suffrage != "Voter" {
				t.Errorf("%s sees %s as %s, want Voter", n.Host(), m.ID, m.Suffrage)
			}
		}
	}
}

func suffrage(st testnet.NodeStatus, id string) string {
	for _, m := range st.Raft.Members {
		if m.ID == id {
			return m.Suffrage
		}
	}
	return ""
}

// TestRecoverAfterLostQuorum: two of three voters die for good. The
// survivor has no leader and refuses writes; `meshreg recover` on its data
// dir (stopped) makes it a one-node cluster that serves every tag it had
// and takes writes.
func TestRecoverAfterLostQuorum(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	repo := testnet.UniqueRepo("e2e/recover")
	c := testnet.NewClient(leader.URL())
	image := smallImage(t, c, repo)
	want := map[string]string{}
	for i := range 10 {
		tag := fmt.Sprintf("v%d", i)
		d, err := c.PutManifest(t.Context(), repo, tag, ocispec.MediaTypeImageManifest, image(tag))
		if err != nil {
			t.Fatal(err)
		}
		want[tag] = d.String()
	}
	testnet.AssertAgree(t, nodes, 20*time.Second, repo)
	survivor := followers[0]
	leader.Kill()
	followers[1].Kill()

	// Lost quorum: no leader, writes refused, and so it stays.
	if !testnet.Eventually(20*time.Second, func() bool {
		st, err := survivor.Status(t.Context())
		return err == nil && st.Raft.LeaderID == "" && st.Voters() == 3
	}) {
		t.Fatal("the survivor still names a leader after two of three voters died")
	}
	sc := testnet.NewClient(survivor.URL())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	_, err := sc.PutManifest(ctx, repo, "lost", ocispec.MediaTypeImageManifest, image("lost"))
	cancel()
	if err == nil {
		t.Fatal("a write succeeded without a quorum")
	}

	survivor.Stop()
	cli := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: t.TempDir()}
	out := string(cli.Run("recover", "--data-dir", survivor.DataDir()))
	if !strings.Contains(out, "1 voter") {
		t.Errorf("recover printed:\n%s", out)
	}
	survivor.Restart()

	st, err := survivor.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Raft.State != "Leader" || len(st.Raft.Members) != 1 || st.Voters() != 1 {
		t.Fatalf("after recover: state %s, members %+v", st.Raft.State, st.Raft.Members)
	}
	for tag, d := range want {
		if got := tagOn(t.Context(), survivor, repo, tag); got != d {
			t.Errorf("after recover %s:%s is %q, want %s", repo, tag, got, d)
		}
	}
	image2 := smallImage(t, sc, repo)
	if _, err := sc.PutManifest(t.Context(), repo, "after", ocispec.MediaTypeImageManifest, image2("after")); err != nil {
		t.Fatalf("write after recover: %v", err)
	}
	if code, _, _, err := sc.Get(t.Context(), "/v2/"+repo+"/manifests/after", nil); err != nil || code != http.StatusOK {
		t.Errorf("GET after: %d %v", code, err)
	}
}

// TestMemberWithExpiredTokenComesBackOnANewAddress: a member's token has
// long expired when it restarts on a new address; it is a member, so the
// leader records its new address all the same.
func TestMemberWithExpiredTokenComesBackOnANewAddress(t *testing.T) {
	cfg := node.DefaultConfig()
	cfg.StabilizationTime = time.Second
	leader := testnet.StartInProcessNode(t, cfg)
	jc := node.DefaultConfig()
	jc.DataDir = testnet.KeepDir(t, "member")
	jc.Join = []string{leader.URL()}
	jc.JoinToken = testnet.JoinToken(t, leader.Node, 2*time.Second)
	member := testnet.StartInProcessNode(t, jc)
	testnet.WaitConverged(t, []*testnet.Node{leader.Node, member.Node}, 2, 1, 30*time.Second)
	ms, err := member.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	member.Stop()
	time.Sleep(2 * time.Second)                // the token expires
	again := testnet.StartInProcessNode(t, jc) // a new libp2p port
	as, err := again.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if as.NodeID != ms.NodeID || as.RaftAddress == ms.RaftAddress {
		t.Fatalf("restart: id %s -> %s, address %s -> %s: want the same id on a new address", ms.NodeID, as.NodeID, ms.RaftAddress, as.RaftAddress)
	}
	if !testnet.Eventually(30*time.Second, func() bool {
		st, err := leader.Status(t.Context())
		if err != nil {
			return false
		}
		for _, m := range st.Raft.Members {
			if m.ID == as.NodeID && m.Address == as.RaftAddress {
				return true
			}
		}
		return false
	}) {
		t.Fatal("the leader did not record the member's new address")
	}
	testnet.WaitConverged(t, []*testnet.Node{leader.Node, again.Node}, 2, 1, 30*time.Second)
}

// TestHostileBootstrapHello: two of three nodes started with
// --bootstrap-expect 3 and a shared --join-token (no cluster key) are
// waiting for the third. An outsider's hello, naming itself and a made-up
// peer, is answered with nothing and counted by no one: no node
// bootstraps a cluster with it. When the third node starts, the three
// form one cluster of exactly themselves.
func TestHostileBootstrapHello(t *testing.T) {
	const secret = "a-shared-bootstrap-secret-0123456789"
	tweak := func(_ int, c *node.Config) { c.JoinToken = secret }
	firstTwo, startRest := testnet.StartInProcessExpecting(t, 3, 2, tweak)
	var target testnet.NodeStatus
	if !testnet.Eventually(20*time.Second, func() bool {
		var err error
		target, err = firstTwo[0].Status(t.Context())
		return err == nil && target.RaftAddress != ""
	}) {
		t.Fatal("no status from the first node")
	}
	o := newOutsider(t)
	fake := newOutsider(t)
	info, err := peer.AddrInfoFromString(target.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.h.Connect(t.Context(), *info); err != nil {
		t.Fatal(err)
	}
	self := o.h.Addrs()[0].String() + "/p2p/" + o.h.ID().String()
	fakeAddr := fake.h.Addrs()[0].String() + "/p2p/" + fake.h.ID().String()
	for _, req := range []any{
		map[string]string{o.h.ID().String(): self, fake.h.ID().String(): fakeAddr},
		map[string]any{"seen": map[string]string{o.h.ID().String(): self, fake.h.ID().String(): fakeAddr}, "proof": "00"},
	} {
		for range 5 {
			answer := o.request(t.Context(), info.ID, "/meshreg/hello/1.0.0", req)
			if strings.Contains(answer, "/p2p/") {
				t.Fatalf("an outsider's hello was answered with peers: %s", answer)
			}
		}
	}
	// Nobody bootstraps with the outsider standing in for the third node.
	for end := time.Now().Add(4 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		for _, n := range firstTwo {
			st, err := n.Status(t.Context())
			if err == nil && len(st.Raft.Members) > 0 {
				t.Fatalf("%s bootstrapped without the third node: members %+v", n.Host(), st.Raft.Members)
			}
		}
	}
	all := append(firstTwo, startRest()...)
	plain := []*testnet.Node{all[0].Node, all[1].Node, all[2].Node}
	testnet.WaitConverged(t, plain, 3, 3, 60*time.Second)
	st, err := all[0].Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range st.Raft.Members {
		if m.ID == o.h.ID().String() || m.ID == fake.h.ID().String() {
			t.Fatalf("the outsider became a member: %+v", st.Raft.Members)
		}
	}
}

// request sends one request/response message on proto and returns the
// answer as text.
func (o *outsider) request(ctx context.Context, to peer.ID, proto protocol.ID, req any) string {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := o.h.NewStream(ctx, to, proto)
	if err != nil {
		o.t.Fatalf("outsider: open %s: %v", proto, err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	b, _ := json.Marshal(req)
	_, _ = s.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...))
	_ = s.CloseWrite()
	var n [4]byte
	if _, err := io.ReadFull(s, n[:]); err != nil {
		return ""
	}
	resp := make([]byte, min(binary.BigEndian.Uint32(n[:]), 64<<10))
	_, _ = io.ReadFull(s, resp)
	return string(resp)
}
