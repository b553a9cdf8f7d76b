package testnet_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/p2p"
	"github.com/meshreg/meshreg/testnet"
)

// TestClusterPartitionMinorityRefusesWrites splits five voters into two and
// three: the two answer reads and refuse writes with 503 UNAVAILABLE, the
// three elect a leader and take writes, and after the heal all five agree
// with the majority.
func TestClusterPartitionMinorityRefusesWrites(t *testing.T) {
	nodes := testnet.StartInProcessCluster(t, 5, func(_ int, c *node.Config) { c.Voters = 5 })
	ctx := t.Context()
	const repo = "e2e/partition"
	c0 := testnet.NewClient(nodes[0].URL())
	manifest := smallImage(t, c0, repo)
	before, err := c0.PutManifest(ctx, repo, "before", ocispec.MediaTypeImageManifest, manifest("before"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if !testnet.Eventually(5*time.Second, func() bool { return tagOn(ctx, n.Node, repo, "before") == before.String() }) {
			t.Fatalf("node %s never saw the tag written before the partition", n.Host())
		}
	}

	// Put the current leader in the minority, the harder case: it must
	// step down and the majority must elect another.
	leaderIdx := 0
	for i, n := range nodes {
		if st, err := n.Status(ctx); err == nil && st.Raft.State == "Leader" {
			leaderIdx = i
		}
	}
	var minority, majority []*testnet.InProcessNode
	minority = append(minority, nodes[leaderIdx])
	for i, n := range nodes {
		if i == leaderIdx {
			continue
		}
		if len(minority) < 2 {
			minority = append(minority, n)
		} else {
			majority = append(majority, n)
		}
	}
	testnet.Partition(t, minority, majority)

	// The minority: reads from local state, writes refused with 503.
	for _, n := range minority {
		if got := tagOn(ctx, n.Node, repo, "before"); got != before.String() {
			t.Errorf("minority node %s: read of an old tag = %q, want %s", n.Host(), got, before)
		}
		var status int
		var body string
		ok := testnet.Eventually(20*time.Second, func() bool {
			status, body = put(t, n.URL(), repo, "minority", manifest("minority"))
			return status == http.StatusServiceUnavailable
		})
		if !ok {
			t.Fatalf("minority node %s: write answered %d %s, want 503", n.Host(), status, body)
		}
		var e struct {
			Errors []struct{ Code, Message string }
		}
		if json.Unmarshal([]byte(body), &e) != nil || len(e.Errors) == 0 || e.Errors[0].Code != "UNAVAILABLE" || e.Errors[0].Message == "" {
			t.Errorf("minority node %s: 503 body %s, want an OCI error UNAVAILABLE with a message", n.Host(), body)
		}
	}

	// The majority elects a leader and takes writes.
	var after string
	ok := testnet.Eventually(20*time.Second, func() bool {
		status, _ := put(t, majority[0].URL(), repo, "after", manifest("after"))
		return status == http.StatusCreated
	})
	if !ok {
		t.Fatal("the majority never took a write")
	}
	after = tagOn(ctx, majority[0].Node, repo, "after")

	testnet.Heal(t, minority, majority)
	for _, n := range nodes {
		if !testnet.Eventually(20*time.Second, func() bool { return tagOn(ctx, n.Node, repo, "after") == after }) {
			t.Errorf("node %s did not converge to the majority's state after the heal: after = %q", n.Host(), tagOn(ctx, n.Node, repo, "after"))
		}
		if got := tagOn(ctx, n.Node, repo, "minority"); got != "" {
			t.Errorf("node %s serves a write the minority refused: %s", n.Host(), got)
		}
	}
	var all []*testnet.Node
	for _, n := range nodes {
		all = append(all, n.Node)
	}
	testnet.AssertAgree(t, all, 20*time.Second, repo)
}

// put pushes a manifest and returns the status and body.
func put(t *testing.T, base, repo, tag string, body []byte) (int, string) {
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, base+"/v2/"+repo+"/manifests/"+tag, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, fmt.Sprint(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b)
}

// TestClusterNodesStartedTogetherFormOneCluster starts five nodes at once,
// each naming all five and expecting five: they form exactly one cluster.
func TestClusterNodesStartedTogetherFormOneCluster(t *testing.T) {
	nodes := testnet.StartInProcessTogether(t, 5)
	// One cluster takes a write through any node and shows it on all.
	ctx := t.Context()
	const repo = "e2e/together"
	manifest := smallImage(t, testnet.NewClient(nodes[4].URL()), repo)
	d, err := testnet.NewClient(nodes[2].URL()).PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, manifest("1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if !testnet.Eventually(5*time.Second, func() bool { return tagOn(ctx, n.Node, repo, "v1") == d.String() }) {
			t.Errorf("node %s does not serve the tag written through another node", n.Host())
		}
	}
}

// TestClusterKeyKeepsStrangersOut: two nodes share a private-network key; a
// node without it (or with another one) can neither join them nor fetch
// their blobs, while a node with the key joins and pulls through peers.
func TestClusterKeyKeepsStrangersOut(t *testing.T) {
	key := func() []byte {
		k := make([]byte, 32)
		if _, err := rand.Read(k); err != nil {
			t.Fatal(err)
		}
		return k
	}
	clusterKey := key()
	nodes := testnet.StartInProcessCluster(t, 2, func(_ int, c *node.Config) { c.P2P.PrivateNetworkKey = clusterKey })
	repo := testnet.UniqueRepo("e2e/keyed")
	blob, d := randomBlob(43, 1<<20)
	if _, err := testnet.NewClient(nodes[0].URL()).PushBytes(t.Context(), repo, blob); err != nil {
		t.Fatal(err)
	}
	holder, err := nodes[0].Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	for name, k := range map[string][]byte{"no key": nil, "another key": key()} {
		cfg := node.DefaultConfig()
		cfg.P2P.PrivateNetworkKey = k
		cfg.Join = []string{nodes[0].URL()}
		stranger := testnet.StartInProcessNode(t, cfg)
		time.Sleep(3 * time.Second) // several join attempts
		st, err := stranger.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if st.Raft.LeaderID != "" || len(st.Raft.Members) != 0 {
			t.Errorf("%s: the stranger joined: leader %q, members %+v", name, st.Raft.LeaderID, st.Raft.Members)
		}
		ls, err := nodes[0].Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(ls.Raft.Members) != 2 {
			t.Errorf("%s: the cluster has %d members, want its 2", name, len(ls.Raft.Members))
		}
		// Nor can it fetch a blob from a member over the blob protocol.
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_ = stranger.N.Host().Connect(ctx, holder.RaftAddress)
		answer, body, err := stranger.N.Host().FetchBlob(ctx, nodes[0].PeerID(), p2p.BlobRequest{Digest: d}, 2*time.Second)
		cancel()
		if err == nil {
			body.Close()
			t.Errorf("%s: the stranger fetched blob %s from a member: answer %+v", name, d, answer)
		}
	}
	// A third node with the key joins, naming a member by its multiaddr
	// this time rather than its API URL.
	st, err := nodes[1].Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.P2P.PrivateNetworkKey = clusterKey
	cfg.Join = []string{st.RaftAddress}
	member := testnet.StartInProcessNode(t, cfg)
	testnet.WaitConverged(t, []*testnet.Node{nodes[0].Node, nodes[1].Node, member.Node}, 3, 3, 30*time.Second)
	waitLinked(t, member.Node, repo, d)
	if got, err := getBlob(t.Context(), member.Node, repo, d); err != nil || digest.FromBytes(got) != d {
		t.Fatalf("the keyed member pulled %d bytes of %s through peers: %v", len(got), d, err)
	}
}
