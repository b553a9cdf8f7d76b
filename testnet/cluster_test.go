package testnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// smallImage pushes a config blob through c and returns a function making
// distinct manifests over it (the annotation varies).
func smallImage(t *testing.T, c *testnet.Client, repo string) func(v string) []byte {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	d, err := c.PushBytes(t.Context(), repo, cfg)
	if err != nil {
		t.Fatalf("push config: %v", err)
	}
	return func(v string) []byte {
		m, _ := json.Marshal(ocispec.Manifest{
			Versioned:   specs.Versioned{SchemaVersion: 2},
			MediaType:   ocispec.MediaTypeImageManifest,
			Config:      ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: d, Size: int64(len(cfg))},
			Layers:      []ocispec.Descriptor{},
			Annotations: map[string]string{"v": v},
		})
		return m
	}
}

// tagOn reads the digest a tag points at on node n ("" if absent).
func tagOn(ctx context.Context, n *testnet.Node, repo, tag string) string {
	_, _, d, err := testnet.NewClient(n.URL()).GetManifest(ctx, repo, tag)
	if err != nil {
		return ""
	}
	return d
}

// TestClusterWritesThroughAFollower pushes to a follower of a three-node
// cluster: the follower itself serves the tag as soon as the push returns,
// the others within the replication delay; a tag overwrite and a tag
// delete replicate the same way.
func TestClusterWritesThroughAFollower(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	_, followers := testnet.Leader(t, nodes, 10*time.Second)
	f := followers[0]
	c := testnet.NewClient(f.URL())
	ctx := t.Context()
	const repo = "e2e/cluster"
	manifest := smallImage(t, c, repo)

	d1, err := c.PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, manifest("1"))
	if err != nil {
		t.Fatalf("push through follower %s: %v", f.Host(), err)
	}
	if got := tagOn(ctx, f, repo, "v1"); got != d1.String() {
		t.Fatalf("the follower that took the push serves v1 as %q right after it returned, want %s", got, d1)
	}
	agree := func(tag, want string) {
		t.Helper()
		for _, n := range nodes {
			if !testnet.Eventually(5*time.Second, func() bool { return tagOn(ctx, n, repo, tag) == want }) {
				t.Errorf("node %s: %s:%s is %q, want %q", n.Host(), repo, tag, tagOn(ctx, n, repo, tag), want)
			}
		}
	}
	agree("v1", d1.String())

	// ?consistent=1 reads on the other follower right after a write see it.
	for i := range 20 {
		tag := fmt.Sprintf("c%d", i)
		if _, err := c.PutManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, manifest(tag)); err != nil {
			t.Fatal(err)
		}
		status, _, body, err := testnet.NewClient(followers[1].URL()).Get(ctx, "/v2/"+repo+"/manifests/"+tag+"?consistent=1", nil)
		if err != nil || status != 200 {
			t.Fatalf("consistent read of %s on the other follower right after the write: %d %v %s", tag, status, err, body)
		}
	}

	d2, err := testnet.NewClient(followers[1].URL()).PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, manifest("2"))
	if err != nil {
		t.Fatalf("overwrite through the other follower: %v", err)
	}
	agree("v1", d2.String())

	status, _, body, err := c.Get(ctx, "/v2/"+repo+"/manifests/v1", nil)
	if err != nil || status != 200 {
		t.Fatalf("GET before delete: %d %v %s", status, err, body)
	}
	if err := deleteRef(ctx, f.URL(), repo, "v1"); err != nil {
		t.Fatal(err)
	}
	agree("v1", "")
	// The manifest itself stays: only the tag was deleted.
	for _, n := range nodes {
		if got := tagOn(ctx, n, repo, d2.String()); got != d2.String() {
			t.Errorf("node %s lost manifest %s when its tag was deleted", n.Host(), d2)
		}
	}
}

// TestClusterConformanceOnAFollower runs the OCI conformance suite against a
// follower of a three-node cluster, every write forwarded to the leader.
func TestClusterConformanceOnAFollower(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	_, followers := testnet.Leader(t, nodes, 10*time.Second)
	res, err := testnet.RunConformance(t.Context(), testnet.ConformanceConfig{
		Program:    testnet.Tool(t, "conformance"),
		Registry:   followers[0].Host(),
		Version:    "1.1",
		Repo1:      "conformance/repo1",
		Repo2:      "conformance/repo2",
		ResultsDir: testnet.KeepDir(t, "conformance-follower"),
		Timeout:    8 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.NotPassed {
		t.Logf("%-8s %s\n\t%s", c.Status, c.Name, c.Message)
	}
	t.Logf("OCI conformance against follower %s: %s", followers[0].Host(), res.Summary())
	if res.Tests.Bad()-res.SkippedByDesign() > 0 || res.Tests.Passed == 0 {
		t.Fatalf("conformance on a follower: %s (%d skipped by design: anonymous mount)", res.Tests, res.SkippedByDesign())
	}
}

// TestClusterLeaderKilledDuringPushes kills the leader with SIGKILL while
// every node takes a stream of pushes. After a new leader is elected, every
// push that got a 2xx is present, with its digest, on every live node.
func TestClusterLeaderKilledDuringPushes(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	const repo = "e2e/failover"
	manifest := smallImage(t, testnet.NewClient(followers[0].URL()), repo)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	var (
		mu    sync.Mutex
		acked = map[string]digest.Digest{} // tag → digest of every 2xx push
		fails int
		wg    sync.WaitGroup
	)
	// Each node takes pushes until it has had perNode attempts and the
	// stream has run for a while past the kill: bounded in count and time.
	const perNode = 150
	killed := make(chan struct{})
	var killedAt time.Time
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := testnet.NewClient(n.URL())
			for j := range perNode {
				if ctx.Err() != nil {
					return
				}
				tag := fmt.Sprintf("n%d-%d", i, j)
				d, err := c.PutManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, manifest(tag))
				mu.Lock()
				if err == nil {
					acked[tag] = d
				} else {
					fails++
				}
				mu.Unlock()
				if i == 0 && j == 20 {
					close(killed)
				}
				pause := 10 * time.Millisecond
				if err != nil {
					pause = 100 * time.Millisecond // a dead node or no leader: slow down
				}
				time.Sleep(pause)
			}
		}()
	}
	<-killed
	leader.Kill()
	killedAt = time.Now()
	wg.Wait()
	t.Logf("the push stream ran %v past the kill", time.Since(killedAt).Round(time.Millisecond))

	live := followers
	testnet.Leader(t, live, 15*time.Second)
	t.Logf("%d pushes acknowledged, %d failed around the kill", len(acked), fails)
	// The survivors' writers keep going after the kill; most of their
	// pushes must succeed once a new leader is elected.
	if len(acked) < perNode {
		t.Fatalf("only %d of %d pushes acknowledged: the survivors did not take writes after the kill", len(acked), 3*perNode)
	}
	for _, n := range live {
		for tag, d := range acked {
			if !testnet.Eventually(10*time.Second, func() bool { return tagOn(ctx, n, repo, tag) == d.String() }) {
				t.Errorf("node %s: acknowledged push %s:%s (%s) is missing or different: %q", n.Host(), repo, tag, d, tagOn(ctx, n, repo, tag))
			}
		}
	}
	// The survivors still take writes, and agree on every tag.
	if err := putThroughElections(ctx, testnet.NewClient(live[0].URL()), repo, "after", manifest("after")); err != nil {
		t.Errorf("push after failover: %v", err)
	}
	testnet.AssertAgree(t, live, 10*time.Second, repo)
}

// deleteRef deletes a manifest reference (a tag or a digest) through the API.
func deleteRef(ctx context.Context, base, repo, ref string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, base+"/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("DELETE %s: %s, want 202", req.URL, resp.Status)
	}
	return nil
}

// TestClusterReplacesADeadVoter starts four nodes (three voters and a
// non-voter), kills a voter for good, and checks that the leader removes it
// and promotes the non-voter, while writes go on succeeding throughout.
func TestClusterReplacesADeadVoter(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 4, testnet.Options{Args: []string{"--dead-server-timeout", "2s"}})
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	st, err := leader.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	suffrage := map[string]string{}
	for _, m := range st.Raft.Members {
		suffrage[m.ID] = m.Suffrage
	}
	var victim *testnet.Node
	var live []*testnet.Node
	for _, f := range followers {
		fs, err := f.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if victim == nil && suffrage[fs.NodeID] == "Voter" {
			victim = f
			continue
		}
		live = append(live, f)
	}
	if victim == nil {
		t.Fatalf("no follower is a voter: %+v", st.Raft.Members)
	}
	live = append(live, leader)

	const repo = "e2e/membership"
	c := testnet.NewClient(leader.URL())
	manifest := smallImage(t, c, repo)
	victim.Kill()
	// Writes every 200 ms while the dead voter is replaced: the quorum is
	// never lost, so every one must succeed.
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := c.PutManifest(t.Context(), repo, fmt.Sprintf("t%d", i), ocispec.MediaTypeImageManifest, manifest(fmt.Sprint(i))); err != nil {
			t.Fatalf("write %d while a dead voter is replaced: %v", i, err)
		}
		if i%10 == 9 {
			if s, err := leader.Status(t.Context()); err == nil && len(s.Raft.Members) == 3 && s.Voters() == 3 {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	testnet.WaitConverged(t, live, 3, 3, 20*time.Second)
}

// TestClusterCommand lists the members with `meshreg cluster members` and
// removes a dead one for good with `meshreg cluster remove`, asking a
// follower (which passes the request on to the leader).
func TestClusterCommand(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	cli := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: t.TempDir()}

	out := string(cli.Run("cluster", "members", "--node", followers[0].URL()))
	for _, n := range nodes {
		st, err := n.Status(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, st.NodeID) {
			t.Errorf("cluster members does not list %s:\n%s", st.NodeID, out)
		}
	}
	if strings.Count(out, "Voter") != 3 || strings.Count(out, " yes ") != 1 {
		t.Errorf("cluster members: want 3 voters and one leader:\n%s", out)
	}

	victim := followers[1]
	vs, err := victim.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	victim.Kill()
	cli.Run("cluster", "remove", "--node", followers[0].URL(), vs.NodeID)
	testnet.WaitConverged(t, []*testnet.Node{leader, followers[0]}, 2, 2, 10*time.Second)
	if out := string(cli.Run("cluster", "members", "--node", leader.URL())); strings.Contains(out, vs.NodeID) {
		t.Errorf("removed member still listed:\n%s", out)
	}
	if res := cli.Try("cluster", "remove", "--node", leader.URL(), "not-a-peer-id"); res.Err == nil {
		t.Error("cluster remove of a malformed id succeeded")
	}
}

// TestClusterLaggingNodeCatchesUpBySnapshot stops a follower while 10,000
// tag writes go through the others and the log is compacted past what it
// has; restarted, it catches up through a snapshot the leader sends.
func TestClusterLaggingNodeCatchesUpBySnapshot(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{Args: []string{
		"--snapshot-threshold", "1000", "--trailing-logs", "200", "--snapshot-interval", "500ms"}})
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	lagging := followers[0]
	ctx := t.Context()
	const repo = "e2e/snapshot"
	manifest := smallImage(t, testnet.NewClient(leader.URL()), repo)
	lagging.Stop()

	const writes, workers = 10000, 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := testnet.NewClient(leader.URL())
			for i := w; i < writes; i += workers {
				if err := putThroughElections(ctx, c, repo, fmt.Sprintf("t%d", i), manifest(fmt.Sprint(i%50))); err != nil {
					errs <- fmt.Errorf("write %d: %w", i, err)
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

	lagging.Restart()
	// The writes went in concurrently, so the tags' log order is not their
	// numbering: wait for several.
	for _, i := range []int{0, 1, 4999, 9998, writes - 1} {
		tag := fmt.Sprintf("t%d", i)
		want := tagOn(ctx, leader, repo, tag)
		if !testnet.Eventually(60*time.Second, func() bool { return tagOn(ctx, lagging, repo, tag) == want }) || want == "" {
			t.Fatalf("the restarted node never caught up: %s is %q, want %q", tag, tagOn(ctx, lagging, repo, tag), want)
		}
	}
	testnet.AssertAgree(t, nodes, 30*time.Second, repo)
	log, _, err := testnet.TailFile(lagging.LogPath(), 100000)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.ToLower(log), "installed remote snapshot") {
		t.Errorf("the restarted node caught up without installing a snapshot (log compacted? trailing logs too large?)")
	}
}

// putThroughElections puts a manifest and, as a client would, tries again
// while the cluster answers 503 UNAVAILABLE (no leader for a moment: on a
// loaded machine a leader starved of CPU can miss its lease and an election
// follows), for at most 20 s. Any other error is returned at once.
func putThroughElections(ctx context.Context, c *testnet.Client, repo, tag string, body []byte) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := c.PutManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, body)
		var he *testnet.HTTPError
		if err == nil || !errors.As(err, &he) || he.Status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClusterLeaderStopHandsOver stops the leader with SIGTERM: it hands
// leadership to another voter before it exits, and writes go on.
func TestClusterLeaderStopHandsOver(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	leader.Stop()
	log, _, err := testnet.TailFile(leader.LogPath(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "handed leadership over before stopping") {
		t.Errorf("the stopped leader did not hand leadership over; its log ends:\n%s", log)
	}
	testnet.Leader(t, followers, 5*time.Second)
	c := testnet.NewClient(followers[0].URL())
	manifest := smallImage(t, c, "e2e/handover")
	if _, err := c.PutManifest(t.Context(), "e2e/handover", "v1", ocispec.MediaTypeImageManifest, manifest("1")); err != nil {
		t.Fatalf("write after the leader stopped: %v", err)
	}
}

// TestClusterMemberComesBackOnANewAddress restarts a follower on another
// libp2p port: it tells the leader its new address and takes part again.
func TestClusterMemberComesBackOnANewAddress(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	moved := followers[0]
	before, err := moved.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	moved.RestartOnNewP2PPort()
	after, err := moved.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if after.RaftAddress == before.RaftAddress {
		t.Fatalf("the node kept its address %s", after.RaftAddress)
	}
	// The leader records the new address, and the node is a voter still.
	ok := testnet.Eventually(20*time.Second, func() bool {
		st, err := leader.Status(t.Context())
		if err != nil {
			return false
		}
		for _, m := range st.Raft.Members {
			if m.ID == after.NodeID {
				return m.Suffrage == "Voter" && m.Address == after.RaftAddress
			}
		}
		return false
	})
	if !ok {
		st, _ := leader.Status(t.Context())
		t.Fatalf("the leader did not record %s for %s: %+v", after.RaftAddress, after.NodeID, st.Raft.Members)
	}
	// Writes through the moved node work, and it sees writes made elsewhere.
	const repo = "e2e/moved"
	c := testnet.NewClient(moved.URL())
	manifest := smallImage(t, c, repo)
	if _, err := c.PutManifest(t.Context(), repo, "v1", ocispec.MediaTypeImageManifest, manifest("1")); err != nil {
		t.Fatalf("write through the moved node: %v", err)
	}
	d, err := testnet.NewClient(leader.URL()).PutManifest(t.Context(), repo, "v2", ocispec.MediaTypeImageManifest, manifest("2"))
	if err != nil {
		t.Fatal(err)
	}
	if !testnet.Eventually(10*time.Second, func() bool { return tagOn(t.Context(), moved, repo, "v2") == d.String() }) {
		t.Error("the moved node does not receive new writes")
	}
	testnet.AssertAgree(t, nodes, 10*time.Second, repo)
}
