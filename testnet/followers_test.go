package testnet_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// Followers of the metadata (issue 13): Raft membership is bounded to
// --voters voters and --max-raft-members non-voters; every other node
// follows the committed log from a member without being one.

// startBounded starts size nodes, the first bootstrapping and the others
// joining it with a join token, each with args (and --zone zones[i] when
// zones is not nil). It does not wait for the roles to settle (waitRoles).
func startBounded(t *testing.T, size int, args []string, zones []string) []*testnet.Node {
	t.Helper()
	return startBoundedEnv(t, size, args, zones, nil)
}

// startBoundedEnv is startBounded with env (KEY=VALUE) for every node.
func startBoundedEnv(t *testing.T, size int, args []string, zones []string, env []string) []*testnet.Node {
	t.Helper()
	zoneArgs := func(i int) []string {
		if zones == nil {
			return nil
		}
		return []string{"--zone", zones[i]}
	}
	base := append([]string{"--stabilization-time", testnet.HarnessStabilization.String()}, args...)
	first := testnet.StartNode(t, testnet.Options{Args: append(append([]string{}, base...), zoneArgs(0)...), Env: env})
	nodes := []*testnet.Node{first}
	join := []string{"--join", first.URL(), "--join-token", testnet.JoinToken(t, first, time.Hour)}
	for i := 1; i < size; i++ {
		a := append(append(append([]string{}, base...), join...), zoneArgs(i)...)
		nodes = append(nodes, testnet.StartNode(t, testnet.Options{Args: a, Env: env}))
	}
	return nodes
}

// roleCounts are the roles nodes report: voters (the leader included),
// non-voters and followers.
type roleCounts struct{ voters, nonvoters, followers int }

// waitRoles waits until the nodes report want (every node naming one
// leader, the followers too) and returns their statuses; it fails the test
// after timeout.
func waitRoles(t *testing.T, nodes []*testnet.Node, want roleCounts, timeout time.Duration) map[*testnet.Node]testnet.NodeStatus {
	t.Helper()
	var last string
	var sts map[*testnet.Node]testnet.NodeStatus
	ok := testnet.Eventually(timeout, func() bool {
		sts = map[*testnet.Node]testnet.NodeStatus{}
		var got roleCounts
		leader := ""
		for _, n := range nodes {
			st, err := n.Status(context.Background())
			if err != nil {
				last = err.Error()
				return false
			}
			sts[n] = st
			switch st.Role {
			case "leader", "voter":
				got.voters++
			case "non-voter":
				got.nonvoters++
			case "follower":
				got.followers++
			}
			if st.Raft.LeaderID == "" || (leader != "" && st.Raft.LeaderID != leader) {
				last = fmt.Sprintf("%s (%s) names leader %q, others %q", n.Host(), st.Role, st.Raft.LeaderID, leader)
				return false
			}
			leader = st.Raft.LeaderID
		}
		last = fmt.Sprintf("roles %+v", got)
		return got == want
	})
	if !ok {
		t.Fatalf("the nodes did not settle into %+v in %v; last: %s", want, timeout, last)
	}
	return sts
}

// withRole returns the nodes of a role ("voter" includes the leader).
func withRole(sts map[*testnet.Node]testnet.NodeStatus, nodes []*testnet.Node, role string) []*testnet.Node {
	var out []*testnet.Node
	for _, n := range nodes {
		r := sts[n].Role
		if r == role || (role == "voter" && r == "leader") {
			out = append(out, n)
		}
	}
	return out
}

// readStatus is the HTTP status of GET manifest repo:tag on n (0 if the
// request failed).
func readStatus(ctx context.Context, n *testnet.Node, repo, tag string) (int, string) {
	status, h, _, err := testnet.NewClient(n.URL()).Get(ctx, "/v2/"+repo+"/manifests/"+tag, http.Header{"Accept": {ocispec.MediaTypeImageManifest}})
	if err != nil {
		return 0, ""
	}
	return status, h.Get("Docker-Content-Digest")
}

// followerClusterSize is the size of TestClusterFollowers' cluster, 30
// (issue 13's figure: it starts and settles in about 10 s on a 2-CPU
// machine); MESHREG_E2E_FOLLOWERS_NODES overrides it.
func followerClusterSize(t *testing.T) int {
	if v := os.Getenv("MESHREG_E2E_FOLLOWERS_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 6 || n > 100 {
			t.Fatalf("MESHREG_E2E_FOLLOWERS_NODES=%q: want 6 to 100", v)
		}
		return n
	}
	return 30
}

// TestClusterFollowers runs a cluster of 30 nodes: 3 voters, 2 non-voters
// and 25 followers: a crane push through a follower is readable everywhere;
// the leader is killed; writes through a follower go on within the
// election time; every acknowledged tag reads 200 on every survivor,
// polled from right after the kill; a restarted follower follows again
// instead of rejoining.
func TestClusterFollowers(t *testing.T) {
	testnet.RequireProcess(t)
	size := followerClusterSize(t)
	start := time.Now()
	nodes := startBounded(t, size, []string{"--voters", "3", "--max-raft-members", "2"}, nil)
	sts := waitRoles(t, nodes, roleCounts{3, 2, size - 5}, 90*time.Second)
	settled := time.Now()
	t.Logf("%d nodes started and settled in %v", size, settled.Sub(start).Round(time.Millisecond))
	ctx := t.Context()
	followers := withRole(sts, nodes, "follower")
	var leader *testnet.Node
	for _, n := range nodes {
		if sts[n].Role == "leader" {
			leader = n
		}
	}
	// The followers learn the configuration through their tail: the last
	// change (the second non-voter) reaches them a moment after the
	// members.
	for _, f := range followers {
		st := sts[f]
		if !testnet.Eventually(10*time.Second, func() bool {
			var err error
			st, err = f.Status(ctx)
			return err == nil && st.Follower.Source != "" && len(st.Raft.Members) == 5 && st.Nonvoters() == 2
		}) {
			t.Errorf("follower %s: tail source %q, %d members known (%d non-voters), want a source and 5 (2)", f.Host(), st.Follower.Source, len(st.Raft.Members), st.Nonvoters())
		}
	}
	t.Logf("every follower knew the 5 members %v after the roles settled", time.Since(settled).Round(time.Millisecond))

	// A crane push through a follower: readable, same digest, on every
	// node; another follower pulls the whole image.
	crane := testnet.Tool(t, "crane")
	r := testnet.Runner{T: t, Path: crane, Dir: t.TempDir()}
	const repo = "e2e/followers"
	pushed, m := craneImage(t, r, followers[0].Host()+"/"+repo+":v1", 2, 2, 64<<10)
	for _, n := range nodes {
		if !testnet.Eventually(10*time.Second, func() bool { s, d := readStatus(ctx, n, repo, "v1"); return s == 200 && d == pushed.String() }) {
			s, d := readStatus(ctx, n, repo, "v1")
			t.Errorf("node %s (%s): %s:v1 reads %d %q, want 200 %s", n.Host(), sts[n].Role, repo, s, d, pushed)
		}
	}
	cranePull(t, r, followers[len(followers)-1].Host()+"/"+repo+":v1", pushed, m)

	// Tags acknowledged through followers before the kill.
	manifest := smallImage(t, testnet.NewClient(followers[0].URL()), repo)
	var (
		mu    sync.Mutex
		acked = map[string]digest.Digest{"v1": pushed}
	)
	for i := range 10 {
		f := followers[i%len(followers)]
		tag := fmt.Sprintf("before%d", i)
		d, err := testnet.NewClient(f.URL()).PutManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, manifest(tag))
		if err != nil {
			t.Fatalf("write %s through follower %s: %v", tag, f.Host(), err)
		}
		acked[tag] = d
	}

	var survivors []*testnet.Node
	for _, n := range nodes {
		if n != leader {
			survivors = append(survivors, n)
		}
	}
	leader.Kill()
	killed := time.Now()

	// From right after the kill, every acknowledged tag is polled on every
	// survivor: it must never read 404. A 503 (no leader to confirm a
	// miss) is counted; the final check wants 200 everywhere.
	pollCtx, stopPoll := context.WithCancel(ctx)
	var (
		wrong404 []string
		unavail  int
		polls    int
		pollWG   sync.WaitGroup
	)
	pollWG.Go(func() {
		for round := 0; round < 200 && pollCtx.Err() == nil; round++ {
			mu.Lock()
			tags := make(map[string]digest.Digest, len(acked))
			for k, v := range acked {
				tags[k] = v
			}
			mu.Unlock()
			for _, n := range survivors {
				for tag, d := range tags {
					s, got := readStatus(pollCtx, n, repo, tag)
					mu.Lock()
					polls++
					switch {
					case s == 404:
						wrong404 = append(wrong404, fmt.Sprintf("%s:%s on %s at %v", repo, tag, n.Host(), time.Since(killed).Round(time.Millisecond)))
					case s == 200 && got != d.String():
						wrong404 = append(wrong404, fmt.Sprintf("%s:%s on %s is %s, want %s", repo, tag, n.Host(), got, d))
					case s != 200 && pollCtx.Err() == nil:
						unavail++
					}
					mu.Unlock()
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	// Writes through a follower succeed within the election time: bounded
	// retries, each write given up to 15 s after the kill.
	w := testnet.NewClient(followers[1].URL())
	var firstAfter time.Duration
	for i := range 10 {
		tag := fmt.Sprintf("after%d", i)
		var err error
		for time.Since(killed) < 20*time.Second {
			var d digest.Digest
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			d, err = w.PutManifest(wctx, repo, tag, ocispec.MediaTypeImageManifest, manifest(tag))
			cancel()
			if err == nil {
				mu.Lock()
				acked[tag] = d
				mu.Unlock()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("write %s through follower %s %v after the leader was killed: %v", tag, followers[1].Host(), time.Since(killed).Round(time.Millisecond), err)
		}
		if i == 0 {
			firstAfter = time.Since(killed)
		}
	}
	t.Logf("first write through a follower succeeded %v after the leader was killed", firstAfter.Round(time.Millisecond))
	time.Sleep(2 * time.Second) // the poller sees the new writes too
	stopPoll()
	pollWG.Wait()
	t.Logf("%d reads of acknowledged tags on survivors after the kill, %d not 200 (no leader yet)", polls, unavail)
	if len(wrong404) > 0 {
		t.Errorf("%d reads of acknowledged tags went wrong after the kill, first: %s", len(wrong404), strings.Join(wrong404[:min(5, len(wrong404))], "; "))
	}
	for _, n := range survivors {
		for tag, d := range acked {
			if !testnet.Eventually(10*time.Second, func() bool { s, got := readStatus(ctx, n, repo, tag); return s == 200 && got == d.String() }) {
				s, got := readStatus(ctx, n, repo, tag)
				t.Errorf("survivor %s: acknowledged %s:%s reads %d %q, want 200 %s", n.Host(), repo, tag, s, got, d)
			}
		}
	}

	// A restarted follower follows again: it does not rejoin as a member.
	f := followers[2]
	f.Restart()
	st, err := f.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !testnet.Eventually(20*time.Second, func() bool {
		st, err = f.Status(ctx)
		return err == nil && st.Role == "follower" && st.Follower.Source != ""
	}) {
		t.Errorf("restarted follower %s: role %q, tail source %q, want a follower with a source", f.Host(), st.Role, st.Follower.Source)
	}
	log, _, err := testnet.TailFile(f.LogPath(), 100000)
	if err != nil {
		t.Fatal(err)
	}
	if i := strings.LastIndex(log, "resumed following the metadata"); i < 0 || strings.Contains(log[i:], "joined the cluster") {
		t.Errorf("the restarted follower did not resume following (or joined as a member after): %s", log[max(0, len(log)-2000):])
	}
	for tag, d := range acked {
		if s, got := readStatus(ctx, f, repo, tag); s != 200 || got != d.String() {
			t.Errorf("restarted follower: %s:%s reads %d %q, want 200 %s", repo, tag, s, got, d)
		}
	}

	// A new node may join through a follower (which passes the join on to
	// the leader): the configuration is full, so it follows too.
	var issuer *testnet.Node // a surviving member: a follower issues no join token
	for _, n := range withRole(sts, nodes, "voter") {
		if n != leader {
			issuer = n
		}
	}
	late := testnet.StartNode(t, testnet.Options{Args: []string{"--stabilization-time", testnet.HarnessStabilization.String(),
		"--voters", "3", "--max-raft-members", "2", "--join", f.URL(), "--join-token", testnet.JoinToken(t, issuer, time.Hour)}})
	if !testnet.Eventually(20*time.Second, func() bool { st, err = late.Status(ctx); return err == nil && st.Role == "follower" }) {
		t.Errorf("a node that joined through a follower: role %q, want follower", st.Role)
	}
	if s, got := readStatus(ctx, late, repo, "v1"); s != 200 || got != pushed.String() {
		t.Errorf("a node that joined through a follower: %s:v1 reads %d %q, want 200 %s", repo, s, got, pushed)
	}
}

// TestFollowerCatchesUpByRangeThenSnapshot stops a follower while the
// others take writes, twice: 150 writes are sent to it as a range of log
// entries; then it is stopped 2,000 writes into 10,000, and the 8,000 it
// missed, past the leader's log compaction, come as a snapshot.
func TestFollowerCatchesUpByRangeThenSnapshot(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := startBounded(t, 4, []string{"--voters", "3", "--max-raft-members", "0",
		"--snapshot-threshold", "1000", "--trailing-logs", "200", "--snapshot-interval", "500ms"}, nil)
	sts := waitRoles(t, nodes, roleCounts{3, 0, 1}, 60*time.Second)
	f := withRole(sts, nodes, "follower")[0]
	var leader *testnet.Node
	for _, n := range nodes {
		if sts[n].Role == "leader" {
			leader = n
		}
	}
	ctx := t.Context()
	const repo = "e2e/follower-catchup"
	manifest := smallImage(t, testnet.NewClient(leader.URL()), repo)
	// writes puts count tags (of 20 manifests) through the leader, 8 at a
	// time.
	writes := func(prefix string, count int) {
		t.Helper()
		const workers = 8
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				c := testnet.NewClient(leader.URL())
				for i := w; i < count; i += workers {
					// A loaded machine may cost the leader its lease for a
					// moment (503): retry for a bounded time.
					tag := fmt.Sprintf("%s%d", prefix, i)
					var err error
					for try := 0; try < 100; try++ {
						if _, err = c.PutManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, manifest(strconv.Itoa(i%20))); testnet.StatusOf(err) != http.StatusServiceUnavailable {
							break
						}
						time.Sleep(200 * time.Millisecond)
					}
					if err != nil {
						errs <- fmt.Errorf("write %s: %w", tag, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	caughtUp := func(prefix string, count int) {
		t.Helper()
		for _, i := range []int{0, count / 2, count - 1} {
			tag := fmt.Sprintf("%s%d", prefix, i)
			want := tagOn(ctx, leader, repo, tag)
			if want == "" || !testnet.Eventually(60*time.Second, func() bool { return tagOn(ctx, f, repo, tag) == want }) {
				t.Fatalf("the restarted follower never caught up: %s is %q, want %q", tag, tagOn(ctx, f, repo, tag), want)
			}
		}
		testnet.AssertAgree(t, nodes, 30*time.Second, repo)
	}

	f.Stop()
	writes("r", 150)
	f.Restart()
	caughtUp("r", 150)
	st, err := f.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != "follower" || st.Follower.Snapshots != 0 {
		t.Errorf("after a short outage: role %q, %d snapshots restored, want a follower that caught up by range (0)", st.Role, st.Follower.Snapshots)
	}

	// 10,000 writes, the follower stopped after the first 2,000: the log
	// is compacted past it while it is away (--snapshot-threshold 1000,
	// --trailing-logs 200).
	writes("s", 2000)
	f.Stop()
	writes("t", 8000)
	f.Restart()
	caughtUp("s", 2000)
	caughtUp("t", 8000)
	if st, err = f.Status(ctx); err != nil {
		t.Fatal(err)
	}
	if st.Role != "follower" || st.Follower.Snapshots < 1 {
		t.Errorf("after a long outage: role %q, %d snapshots restored, want a follower that restored one (the log was compacted past it)", st.Role, st.Follower.Snapshots)
	}
	t.Logf("follower status after the snapshot: %+v", st.Follower)
}

// TestMemberLostForGoodIsReplacedByFollower kills the non-voter for good:
// the leader removes it after --dead-server-timeout, and a follower takes
// its slot, one in a zone without a member first (the zone that lost it,
// or another without one; the others, in zones that have a member, wait
// 10 to 20 s before they ask).
func TestMemberLostForGoodIsReplacedByFollower(t *testing.T) {
	testnet.RequireProcess(t)
	// Seven nodes over four zones: three voters and one non-voter, spread
	// over the zones, and three followers.
	zones := []string{"z0", "z1", "z2", "zA", "zA", "z0", "z1"}
	nodes := startBounded(t, len(zones), []string{"--voters", "3", "--max-raft-members", "1", "--dead-server-timeout", "3s"}, zones)
	sts := waitRoles(t, nodes, roleCounts{3, 1, 3}, 90*time.Second)
	victim := withRole(sts, nodes, "non-voter")[0]
	lostZone := sts[victim].Zone
	t.Logf("the non-voter %s is in zone %s", victim.Host(), lostZone)
	var live []*testnet.Node
	for _, n := range nodes {
		if n != victim {
			live = append(live, n)
		}
	}
	// After the kill, the zones without a member: the lost one, unless a
	// voter is there too, and zA when the non-voter was elsewhere (which
	// zones the voters take depends on who joined when). A follower of
	// one of them asks first.
	memberless := map[string]bool{}
	for _, n := range live {
		memberless[sts[n].Zone] = true
	}
	for _, n := range live {
		if r := sts[n].Role; r == "leader" || r == "voter" || r == "non-voter" {
			delete(memberless, sts[n].Zone)
		}
	}
	victim.Kill()
	killed := time.Now()
	sts = waitRoles(t, live, roleCounts{3, 1, 2}, 60*time.Second)
	replacement := withRole(sts, live, "non-voter")[0]
	t.Logf("follower %s (zone %s) took the slot %v after the kill", replacement.Host(), sts[replacement].Zone, time.Since(killed).Round(time.Millisecond))
	if len(memberless) > 0 && !memberless[sts[replacement].Zone] {
		t.Errorf("the slot of the member lost in zone %s went to a follower in zone %s, want one in a zone without a member (%v)",
			lostZone, sts[replacement].Zone, slices.Sorted(maps.Keys(memberless)))
	}
	// The cluster still takes writes, through the new member too.
	c := testnet.NewClient(replacement.URL())
	const repo = "e2e/replaced"
	manifest := smallImage(t, c, repo)
	if _, err := c.PutManifest(t.Context(), repo, "v1", ocispec.MediaTypeImageManifest, manifest("1")); err != nil {
		t.Fatalf("write through the new member: %v", err)
	}
	testnet.AssertAgree(t, live, 15*time.Second, repo)
}

// TestRegionWithoutMemberGetsASeat: every region keeps a member. With the
// Raft configuration full (three voters, no non-voter slot), a node of a
// region that has no member still becomes a non-voter, while another node
// of a region that has one follows.
func TestRegionWithoutMemberGetsASeat(t *testing.T) {
	testnet.RequireProcess(t)
	args := []string{"--voters", "3", "--max-raft-members", "0"}
	nodes := startBounded(t, 4, append(args, "--region", "eu"), nil)
	waitRoles(t, nodes, roleCounts{3, 0, 1}, 90*time.Second)
	join := []string{"--join", nodes[0].URL(), "--join-token", testnet.JoinToken(t, nodes[0], time.Hour)}
	start := func(region string) *testnet.Node {
		a := append(append([]string{"--stabilization-time", testnet.HarnessStabilization.String(), "--region", region}, args...), join...)
		return testnet.StartNode(t, testnet.Options{Args: a})
	}
	far := start("us")
	nodes = append(nodes, far)
	sts := waitRoles(t, nodes, roleCounts{3, 1, 1}, 60*time.Second)
	if got := sts[far].Role; got != "non-voter" {
		t.Fatalf("the first node of region us is a %s, want a non-voter (a seat for the region)", got)
	}
	second := start("us")
	nodes = append(nodes, second)
	sts = waitRoles(t, nodes, roleCounts{3, 1, 2}, 60*time.Second)
	if got := sts[second].Role; got != "follower" {
		t.Errorf("the second node of region us is a %s, want a follower (its region has a member)", got)
	}
}

// TestFollowerFetchesFromFollower: a blob that only one follower of the
// metadata holds (--replicas 1, pushed through it) is served to another
// follower, which has never met it: the DHT names the holder, and the two
// admit each other by exchanging their passes before the bytes move. A
// follower that kept only the holders it had met (the members) found
// none, and in a fan-out left the members to serve every follower.
func TestFollowerFetchesFromFollower(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := startBounded(t, 5, []string{"--voters", "3", "--max-raft-members", "0", "--replicas", "1"}, nil)
	sts := waitRoles(t, nodes, roleCounts{3, 0, 2}, 60*time.Second)
	followers := withRole(sts, nodes, "follower")
	holder, puller := followers[0], followers[1]
	ctx := t.Context()
	const repo = "e2e/follower-to-follower"
	blob := []byte(strings.Repeat("held by one follower only\n", 40000)) // ~1 MiB
	d, err := testnet.NewClient(holder.URL()).PushBytes(ctx, repo, blob)
	if err != nil {
		t.Fatalf("push through follower %s: %v", holder.Host(), err)
	}
	// Bounded retries: the link reaches the puller through its tail, and
	// the holder's provider record the DHT, a moment after the push.
	var last error
	if !testnet.Eventually(20*time.Second, func() bool {
		last = testnet.NewClient(puller.URL()).VerifyBlob(ctx, repo, d, int64(len(blob)))
		return last == nil
	}) {
		t.Fatalf("follower %s could not get %s, held only by follower %s: %v", puller.Host(), d, holder.Host(), last)
	}
	// The premise: no member holds it (--replicas 1), so the bytes came
	// from the holder.
	for _, n := range withRole(sts, nodes, "voter") {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Blobs.Count != 0 {
			t.Errorf("member %s holds %d blobs, want none (only the follower that took the push)", n.Host(), st.Blobs.Count)
		}
	}
}

// TestFollowerWithExpiredPassesJoinsAgain: a follower stopped for longer
// than its passes are valid (seconds here, through serve's test-only
// MESHREG_TEST_FOLLOWER_PASS_TTL; 7 days otherwise) would be refused by
// every member for good: restarted, it says so and joins again through
// --join as a new node, and follows with a fresh pass.
func TestFollowerWithExpiredPassesJoinsAgain(t *testing.T) {
	testnet.RequireProcess(t)
	const ttl = 8 * time.Second
	nodes := startBoundedEnv(t, 4, []string{"--voters", "3", "--max-raft-members", "0"}, nil,
		[]string{"MESHREG_TEST_FOLLOWER_PASS_TTL=" + ttl.String()})
	sts := waitRoles(t, nodes, roleCounts{3, 0, 1}, 60*time.Second)
	f := withRole(sts, nodes, "follower")[0]
	f.Stop()
	time.Sleep(ttl + 2*time.Second)
	// Written while it was down: it must learn it after joining again.
	ctx := t.Context()
	const repo = "e2e/expired-passes"
	c := testnet.NewClient(withRole(sts, nodes, "voter")[0].URL())
	tagged, err := c.PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, smallImage(t, c, repo)("1"))
	if err != nil {
		t.Fatal(err)
	}
	f.Restart()
	var st testnet.NodeStatus
	if !testnet.Eventually(30*time.Second, func() bool {
		st, err = f.Status(ctx)
		return err == nil && st.Role == "follower" && st.Follower.Source != ""
	}) {
		t.Fatalf("the restarted follower: role %q, tail source %q (err %v), want a follower again", st.Role, st.Follower.Source, err)
	}
	if !testnet.Eventually(10*time.Second, func() bool { s, d := readStatus(ctx, f, repo, "v1"); return s == 200 && d == tagged.String() }) {
		s, d := readStatus(ctx, f, repo, "v1")
		t.Errorf("the follower that joined again reads %s:v1 %d %q, want 200 %s", repo, s, d, tagged)
	}
	log, _, err := testnet.TailFile(f.LogPath(), 200000)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndex(log, "passes expired while it was down")
	if i < 0 {
		t.Fatalf("the restarted follower did not say its passes expired: %s", log[max(0, len(log)-3000):])
	}
	if !strings.Contains(log[i:], `"rejoined_after_lost_passes":true`) || !strings.Contains(log[i:], "following the metadata") {
		t.Errorf("after its passes expired, the follower did not join again and follow: %s", log[i:min(len(log), i+5000)])
	}
	if strings.Contains(log[i:], "resumed following the metadata") {
		t.Error("the follower resumed following with expired passes")
	}
}

// TestRevokedFollowerIsCutOff: `meshreg cluster remove` of a follower of
// the metadata (no Raft member) revokes it for good: it says so and stops
// (/readyz 503, role "revoked"), a tag written after the revocation
// reaches the other follower but never it, it cannot fetch a blob from any
// node, a restart does not bring it back, and `meshreg cluster nodes` no
// longer lists it. Before, the command answered "not a member" and the
// follower kept renewing its passes forever.
func TestRevokedFollowerIsCutOff(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := startBounded(t, 5, []string{"--voters", "3", "--max-raft-members", "0", "--replicas", "1"}, nil)
	sts := waitRoles(t, nodes, roleCounts{3, 0, 2}, 60*time.Second)
	followers, members := withRole(sts, nodes, "follower"), withRole(sts, nodes, "voter")
	a, b := followers[0], followers[1]
	bID := sts[b].NodeID
	ctx := t.Context()
	cli := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: t.TempDir()}

	// A blob only follower A holds (--replicas 1), linked before the
	// revocation, so that B's metadata knows it: B would fetch it from A.
	const repo = "e2e/revoked"
	blob := []byte(strings.Repeat("held by follower A only\n", 20000))
	held, err := testnet.NewClient(a.URL()).PushBytes(ctx, repo, blob)
	if err != nil {
		t.Fatalf("push through follower %s: %v", a.Host(), err)
	}
	mc := testnet.NewClient(members[0].URL())
	manifest := smallImage(t, mc, repo)
	if _, err := mc.PutManifest(ctx, repo, "before", ocispec.MediaTypeImageManifest, manifest("before")); err != nil {
		t.Fatal(err)
	}
	if !testnet.Eventually(10*time.Second, func() bool { s, _ := readStatus(ctx, b, repo, "before"); return s == 200 }) {
		t.Fatalf("follower B did not follow before the revocation")
	}

	revoked := time.Now()
	out := strings.TrimSpace(string(cli.Run("cluster", "remove", "--node", members[1].URL(), bID)))
	if out != "revoked follower "+bID {
		t.Errorf("cluster remove of follower B says %q, want %q", out, "revoked follower "+bID)
	}
	if res := cli.Try("cluster", "remove", "--node", members[2].URL(), bID); res.Err == nil || !strings.Contains(string(res.Stderr), "already revoked") {
		t.Errorf("a second revocation of B: %v %s, want a clear 'already revoked'", res.Err, res.Stderr)
	}

	// B learns it and stops: /readyz 503, role "revoked", one ERROR line.
	var st testnet.NodeStatus
	if !testnet.Eventually(15*time.Second, func() bool {
		code, _, _ := b.Ready(ctx)
		st, err = b.Status(ctx)
		return code == http.StatusServiceUnavailable && err == nil && st.Role == "revoked" && st.Revoked != ""
	}) {
		code, body, _ := b.Ready(ctx)
		t.Fatalf("follower B after its revocation: /readyz %d %q, role %q, revoked %q (err %v); want 503 and revoked", code, body, st.Role, st.Revoked, err)
	}
	t.Logf("follower B stopped %v after the revocation: %s", time.Since(revoked).Round(time.Millisecond), st.Revoked)

	// A tag written now reaches A, never B.
	if _, err := mc.PutManifest(ctx, repo, "after", ocispec.MediaTypeImageManifest, manifest("after")); err != nil {
		t.Fatal(err)
	}
	if !testnet.Eventually(10*time.Second, func() bool { s, _ := readStatus(ctx, a, repo, "after"); return s == 200 }) {
		t.Errorf("follower A does not read the tag written after B's revocation")
	}
	noneOnB := func(what string) {
		t.Helper()
		start := time.Now()
		defer func() { t.Logf("%s: B read nothing new in %v", what, time.Since(start).Round(time.Millisecond)) }()
		for range 5 {
			if s, _ := readStatus(ctx, b, repo, "after"); s == 200 {
				t.Fatalf("%s: the revoked follower B reads a tag written after its revocation", what)
			}
			if err := testnet.NewClient(b.URL()).VerifyBlob(ctx, repo, held, int64(len(blob))); err == nil {
				t.Fatalf("%s: the revoked follower B fetched blob %s, held by follower A only", what, held)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// The control: the blob is there to fetch, for a member (which then
	// holds it too: B must not get it from there either).
	if !testnet.Eventually(10*time.Second, func() bool { return mc.VerifyBlob(ctx, repo, held, int64(len(blob))) == nil }) {
		t.Fatalf("member %s cannot fetch blob %s from follower A", members[0].Host(), held)
	}
	noneOnB("running")

	// The fleet view does not list B any more.
	var nodesOut string
	if !testnet.Eventually(10*time.Second, func() bool {
		nodesOut = string(cli.Run("cluster", "nodes", "--node", members[0].URL()))
		return !strings.Contains(nodesOut, bID) && strings.Contains(nodesOut, "1 followers")
	}) {
		t.Errorf("cluster nodes still lists the revoked follower %s:\n%s", bID, nodesOut)
	}

	// A restart does not bring it back.
	b.RestartAlive()
	if !testnet.Eventually(15*time.Second, func() bool {
		code, _, _ := b.Ready(ctx)
		st, err = b.Status(ctx)
		return code == http.StatusServiceUnavailable && err == nil && st.Role == "revoked"
	}) {
		t.Fatalf("follower B after a restart: role %q (err %v), want still revoked", st.Role, err)
	}
	noneOnB("restarted")
	log, _, err := testnet.TailFile(b.LogPath(), 200000)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, "this node was revoked by an operator") || !strings.Contains(log, "new identity") {
		t.Errorf("follower B's log does not say it was revoked and what to do")
	}
}
