package testnet_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet"
)

// fleetSecret is the shared --join-token of a DaemonSet without a cluster
// key: every node gets the same one.
const fleetSecret = "a-fleet-wide-join-secret-0123456789"

// fleetAdmissions are the two ways a --bootstrap-expect fleet admits its
// nodes: the same cluster key (as deploy/kubernetes ships) or the same
// --join-token as a shared secret. Each sets one of them on a config.
func fleetAdmissions(t *testing.T) map[string]func(c *node.Config) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return map[string]func(c *node.Config){
		"shared join token": func(c *node.Config) { c.JoinToken = fleetSecret },
		"cluster key":       func(c *node.Config) { c.P2P.PrivateNetworkKey = key },
	}
}

// waitReady waits until every node answers /readyz with 200.
func waitReady(t *testing.T, nodes []*testnet.Node, timeout time.Duration) {
	t.Helper()
	for _, n := range nodes {
		var code int
		var body string
		if !testnet.Eventually(timeout, func() bool {
			code, body, _ = n.Ready(t.Context())
			return code == http.StatusOK
		}) {
			t.Fatalf("%s is not ready after %v: %d %q", n.Host(), timeout, code, body)
		}
	}
}

// TestLateJoinersWithBootstrapExpect: a DaemonSet gives every node the same
// arguments (--join naming all, --bootstrap-expect 3, one cluster key or
// one shared --join-token). Three start and form the cluster; a fourth and a fifth
// started later with the same arguments find the cluster and join it
// (bootstrap-expect is for the first start only), become ready, and take
// writes that every node then serves.
func TestLateJoinersWithBootstrapExpect(t *testing.T) {
	for name, admit := range fleetAdmissions(t) {
		t.Run(name, func(t *testing.T) { lateJoiners(t, admit) })
	}
}

func lateJoiners(t *testing.T, admit func(c *node.Config)) {
	tweak := func(_ int, c *node.Config) {
		admit(c)
		c.BootstrapExpect = 3
		c.StabilizationTime = testnet.HarnessStabilization
	}
	first, startRest := testnet.StartInProcessExpecting(t, 5, 3, tweak)
	plain := []*testnet.Node{first[0].Node, first[1].Node, first[2].Node}
	testnet.WaitConverged(t, plain, 3, 3, 60*time.Second)
	for _, n := range startRest() {
		plain = append(plain, n.Node)
	}
	testnet.WaitConverged(t, plain, 5, 3, 60*time.Second)
	waitReady(t, plain, 20*time.Second)
	ctx := t.Context()
	const repo = "fleet/late"
	c := testnet.NewClient(plain[4].URL())
	manifest := smallImage(t, c, repo)
	d, err := c.PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, manifest("1"))
	if err != nil {
		t.Fatalf("push through a late joiner: %v", err)
	}
	for _, n := range plain {
		if !testnet.Eventually(10*time.Second, func() bool { return tagOn(ctx, n, repo, "v1") == d.String() }) {
			t.Errorf("%s does not serve the tag pushed through a late joiner", n.Host())
		}
	}
}

// TestBootstrapExpectMoreThanExpected: four (then five) nodes start at the
// same moment, each naming all and expecting three. Exactly one cluster
// forms (one bootstrap of three voters) and the others join it.
func TestBootstrapExpectMoreThanExpected(t *testing.T) {
	for _, size := range []int{4, 5} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			tweak := func(_ int, c *node.Config) {
				c.JoinToken = fleetSecret
				c.BootstrapExpect = 3
				c.StabilizationTime = testnet.HarnessStabilization
			}
			all, _ := testnet.StartInProcessExpecting(t, size, size, tweak)
			var plain []*testnet.Node
			for _, n := range all {
				plain = append(plain, n.Node)
			}
			testnet.WaitConverged(t, plain, size, 3, 60*time.Second)
			waitReady(t, plain, 20*time.Second)
		})
	}
}

// TestRemovedVoterComesBack: a voter is down longer than
// --dead-server-timeout and is removed. Restarted with its data dir, its
// address and --join, but without a valid join token, it says in /readyz,
// in its status and in the error of a push that it was removed while down
// and is rejoining (and why that fails), not "could not be copied".
// Restarted with a token, it is re-admitted by itself: a member again,
// ready, serving every tag (those written while it was out too), its blobs
// still on disk.
func TestRemovedVoterComesBack(t *testing.T) {
	cfgs := make([]node.Config, 3)
	nodes := testnet.StartInProcessCluster(t, 3, func(i int, c *node.Config) {
		c.DeadServerTimeout = 2 * time.Second
		cfgs[i] = *c
	})
	plain := []*testnet.Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}
	leaderNode, _ := testnet.Leader(t, plain, 30*time.Second)
	var victim *testnet.InProcessNode
	var vcfg node.Config
	var live []*testnet.Node
	for i, n := range nodes {
		if victim == nil && i > 0 && n.Node != leaderNode {
			victim, vcfg = n, cfgs[i]
			continue
		}
		live = append(live, n.Node)
	}
	ctx := t.Context()
	const repo = "fleet/reboot"
	lc := testnet.NewClient(leaderNode.URL())
	smallImage(t, testnet.NewClient(victim.URL()), repo) // the victim holds the config blob
	manifest := smallImage(t, lc, repo)                  // and so does the leader
	want := map[string]string{}
	for i := range 3 {
		d, err := lc.PutManifest(ctx, repo, fmt.Sprintf("before%d", i), ocispec.MediaTypeImageManifest, manifest(fmt.Sprint(i)))
		if err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprintf("before%d", i)] = d.String()
	}
	testnet.AssertAgree(t, plain, 20*time.Second, repo)
	vs := statusOf(t, victim)
	if vs.Blobs.Count == 0 {
		t.Fatalf("the victim holds no blob before it stops")
	}
	victim.Stop()
	// Removed after the dead-server timeout.
	testnet.WaitConverged(t, live, 2, 2, 30*time.Second)
	for i := range 3 {
		d, err := lc.PutManifest(ctx, repo, fmt.Sprintf("while%d", i), ocispec.MediaTypeImageManifest, manifest(fmt.Sprint(10+i)))
		if err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprintf("while%d", i)] = d.String()
	}

	// Back on the same address, with --join but no valid join token.
	addr, err := ma.NewMultiaddr(vs.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	listen, _ := ma.SplitFunc(addr, func(c ma.Component) bool { return c.Protocol().Code == ma.P_P2P })
	vcfg.P2P.ListenAddrs = []string{listen.String()}
	vcfg.Join = []string{live[0].URL(), live[1].URL()}
	vcfg.JoinToken = ""
	back := testnet.RestartInProcessNode(t, vcfg)
	var body string
	if !testnet.Eventually(30*time.Second, func() bool {
		_, body, _ = back.Ready(ctx)
		return strings.Contains(body, "removed from the cluster while it was down") && strings.Contains(body, "rejoining through "+live[0].URL())
	}) {
		t.Fatalf("/readyz of the removed node says %q", body)
	}
	if !strings.Contains(body, "join token") {
		t.Errorf("/readyz does not say why the rejoin fails: %q", body)
	}
	if st := statusOf(t, back); !st.Removed {
		t.Errorf("the status of the removed node says removed=false")
	}
	bc := testnet.NewClient(back.URL())
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err = bc.PutManifest(pctx, repo, "refused", ocispec.MediaTypeImageManifest, manifest("refused"))
	cancel()
	if err == nil || !strings.Contains(err.Error(), "removed from the cluster while it was down") || strings.Contains(err.Error(), "could not be copied") {
		t.Errorf("push to the removed node: %v", err)
	}
	back.Stop()

	// Again, with a join token: it rejoins by itself.
	vcfg.JoinToken = testnet.JoinToken(t, live[0], time.Hour)
	back = testnet.RestartInProcessNode(t, vcfg)
	if got := statusOf(t, back).Blobs.Count; got < vs.Blobs.Count {
		t.Errorf("the node holds %d blobs after the restart, %d before", got, vs.Blobs.Count)
	}
	all := append(live, back.Node)
	testnet.WaitConverged(t, all, 3, 3, 45*time.Second)
	waitReady(t, all, 20*time.Second)
	if st := statusOf(t, back); st.Removed || st.NodeID != vs.NodeID {
		t.Fatalf("after rejoining: node %s (was %s), removed %v", st.NodeID, vs.NodeID, st.Removed)
	}
	for tag, d := range want {
		if !testnet.Eventually(10*time.Second, func() bool { return tagOn(ctx, back.Node, repo, tag) == d }) {
			t.Errorf("the rejoined node serves %s:%s as %q, want %s", repo, tag, tagOn(ctx, back.Node, repo, tag), d)
		}
	}
	bc = testnet.NewClient(back.URL())
	d, err := bc.PutManifest(ctx, repo, "after", ocispec.MediaTypeImageManifest, manifest("after"))
	if err != nil {
		t.Fatalf("push through the rejoined node: %v", err)
	}
	testnet.AssertAgree(t, all, 20*time.Second, repo)
	if tagOn(ctx, leaderNode, repo, "after") != d.String() {
		t.Errorf("the leader does not serve the tag pushed through the rejoined node")
	}
}

// joinStatus is the "join" part of the status document.
type joinStatus struct {
	Waiting   string `json:"waiting"`
	Target    string `json:"target"`
	LastError string `json:"last_error"`
	Attempts  int    `json:"attempts"`
}

func joinStatusOf(t *testing.T, n *testnet.Node) joinStatus {
	t.Helper()
	code, _, body, err := testnet.NewClient(n.URL()).Get(t.Context(), "/_meshreg/v1/status", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("status of %s: %d %v", n.Host(), code, err)
	}
	var st struct {
		Join *joinStatus `json:"join"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	if st.Join == nil {
		return joinStatus{}
	}
	return *st.Join
}

// TestJoinErrorsSayWhatIsWrong: --join pointed at a member's p2p port (an
// http URL whose port speaks libp2p) says that --join wants the API URL or
// a multiaddr with /p2p/; a --join nobody answers says what the node waits
// for; a --join to a cluster with a key this node lacks says the cluster
// key is missing or wrong. Each in /readyz and in the status, while the
// node retries with a growing pause.
func TestJoinErrorsSayWhatIsWrong(t *testing.T) {
	member := testnet.StartInProcessNode(t, node.DefaultConfig())
	ms := statusOf(t, member)
	addr, err := ma.NewMultiaddr(ms.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	port, err := addr.ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatal(err)
	}
	dead, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	kc := node.DefaultConfig()
	kc.P2P.PrivateNetworkKey = make([]byte, 32)
	if _, err := rand.Read(kc.P2P.PrivateNetworkKey); err != nil {
		t.Fatal(err)
	}
	keyed := testnet.StartInProcessNode(t, kc)
	cases := []struct {
		name, join string
		want       []string
	}{
		{"p2p port", "http://127.0.0.1:" + port, []string{"p2p", "API URL", "/p2p/"}},
		{"p2p port over https", "https://127.0.0.1:" + port, []string{"p2p", "API URL", "/p2p/"}},
		{"nobody there", "http://" + dead, []string{"waiting to join", "http://" + dead, "connection refused"}},
		{"keyed cluster, no key", keyed.URL(), []string{"waiting to join", keyed.URL(), "--cluster-key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := node.DefaultConfig()
			cfg.Join = []string{tc.join}
			cfg.JoinToken = testnet.JoinToken(t, member.Node, time.Hour)
			joiner := testnet.StartInProcessNode(t, cfg)
			var body string
			if !testnet.Eventually(15*time.Second, func() bool {
				var code int
				code, body, _ = joiner.Ready(t.Context())
				return code == http.StatusServiceUnavailable && containsAll(body, tc.want)
			}) {
				t.Fatalf("/readyz says %q, want %q", body, tc.want)
			}
			var js joinStatus
			if !testnet.Eventually(15*time.Second, func() bool {
				js = joinStatusOf(t, joiner.Node)
				return js.Attempts >= 2 && js.Target == tc.join && containsAll(js.Waiting+" "+js.LastError, tc.want)
			}) {
				t.Fatalf("status join: %+v, want %q", js, tc.want)
			}
			if tc.name != "nobody there" {
				return
			}
			// Backing off: a handful of attempts in 6 s, not one a second.
			before := joinStatusOf(t, joiner.Node).Attempts
			time.Sleep(6 * time.Second)
			if n := joinStatusOf(t, joiner.Node).Attempts - before; n > 3 {
				t.Errorf("%d join attempts in 6 s: no back-off", n)
			}
		})
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestFleetVoterRebootedPastDeadServerTimeout: the DaemonSet case of a
// reboot. A fleet started with --bootstrap-expect 3 and a cluster key or a
// shared --join-token loses a voter for longer than --dead-server-timeout; the
// node, restarted with its data dir, its address and the same arguments,
// finds out it was removed, is admitted again by the key or secret, and is
// a ready voter serving every tag.
func TestFleetVoterRebootedPastDeadServerTimeout(t *testing.T) {
	for name, admit := range fleetAdmissions(t) {
		t.Run(name, func(t *testing.T) { fleetReboot(t, admit) })
	}
}

func fleetReboot(t *testing.T, admit func(c *node.Config)) {
	cfgs := make([]node.Config, 3)
	nodes, _ := testnet.StartInProcessExpecting(t, 3, 3, func(i int, c *node.Config) {
		admit(c)
		c.StabilizationTime = testnet.HarnessStabilization
		c.DeadServerTimeout = 2 * time.Second
		cfgs[i] = *c
	})
	plain := []*testnet.Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}
	testnet.WaitConverged(t, plain, 3, 3, 60*time.Second)
	leaderNode, _ := testnet.Leader(t, plain, 30*time.Second)
	var victim *testnet.InProcessNode
	var vcfg node.Config
	var live []*testnet.Node
	for i, n := range nodes {
		if victim == nil && n.Node != leaderNode {
			victim, vcfg = n, cfgs[i]
			continue
		}
		live = append(live, n.Node)
	}
	ctx := t.Context()
	const repo = "fleet/daemonset-reboot"
	lc := testnet.NewClient(leaderNode.URL())
	manifest := smallImage(t, lc, repo)
	d1, err := lc.PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, manifest("1"))
	if err != nil {
		t.Fatal(err)
	}
	testnet.AssertAgree(t, plain, 20*time.Second, repo)
	vs := statusOf(t, victim)
	victim.Stop()
	testnet.WaitConverged(t, live, 2, 2, 30*time.Second)
	d2, err := lc.PutManifest(ctx, repo, "v2", ocispec.MediaTypeImageManifest, manifest("2"))
	if err != nil {
		t.Fatal(err)
	}

	addr, err := ma.NewMultiaddr(vs.RaftAddress)
	if err != nil {
		t.Fatal(err)
	}
	listen, _ := ma.SplitFunc(addr, func(c ma.Component) bool { return c.Protocol().Code == ma.P_P2P })
	vcfg.P2P.ListenAddrs = []string{listen.String()}
	back := testnet.RestartInProcessNode(t, vcfg)
	all := append(live, back.Node)
	testnet.WaitConverged(t, all, 3, 3, 45*time.Second)
	waitReady(t, all, 20*time.Second)
	if st := statusOf(t, back); st.Removed || st.NodeID != vs.NodeID {
		t.Fatalf("after rejoining: node %s (was %s), removed %v", st.NodeID, vs.NodeID, st.Removed)
	}
	for tag, d := range map[string]string{"v1": d1.String(), "v2": d2.String()} {
		if !testnet.Eventually(10*time.Second, func() bool { return tagOn(ctx, back.Node, repo, tag) == d }) {
			t.Errorf("the rebooted node serves %s:%s as %q, want %s", repo, tag, tagOn(ctx, back.Node, repo, tag), d)
		}
	}
}

// TestMemberCutOffPastDeadServerTimeoutComesBack: a running voter is cut
// off from the others (a partition) for longer than
// --dead-server-timeout and removed; it never learns it, as a stopped one
// would not. Once the partition heals it finds out by itself, rejoins, and
// is a ready voter again, without a restart.
func TestMemberCutOffPastDeadServerTimeoutComesBack(t *testing.T) {
	nodes := testnet.StartInProcessCluster(t, 3, func(_ int, c *node.Config) { c.DeadServerTimeout = 2 * time.Second })
	plain := []*testnet.Node{nodes[0].Node, nodes[1].Node, nodes[2].Node}
	leaderNode, _ := testnet.Leader(t, plain, 30*time.Second)
	var cut *testnet.InProcessNode
	var rest []*testnet.InProcessNode
	for i, n := range nodes {
		if cut == nil && i > 0 && n.Node != leaderNode {
			cut = n
			continue
		}
		rest = append(rest, n)
	}
	testnet.Partition(t, []*testnet.InProcessNode{cut}, rest)
	testnet.WaitConverged(t, []*testnet.Node{rest[0].Node, rest[1].Node}, 2, 2, 30*time.Second)
	if st := statusOf(t, cut); len(st.Raft.Members) != 3 {
		t.Fatalf("the cut-off node learned its removal (%d members): the test needs it not to", len(st.Raft.Members))
	}
	testnet.Heal(t, []*testnet.InProcessNode{cut}, rest)
	testnet.WaitConverged(t, plain, 3, 3, 50*time.Second)
	waitReady(t, plain, 20*time.Second)
}
