package testnet_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet"
)

// TestEvictionUnderDiskBudget: a 3-node cluster (--replicas 2) whose third
// node has a small --max-disk (6 MiB) pulls four images of ~3 MiB, two
// pushed through it and two through the first node. The third node's blob bytes come back under the
// budget after every pull; every image pulls in full through it, again
// after the others pushed it out (evicted blobs come back from peers); and
// no blob was left with fewer than --replicas copies, let alone none (the
// blob files are counted in the three data dirs).
func TestEvictionUnderDiskBudget(t *testing.T) {
	testnet.RequireProcess(t)
	const budget = 6 << 20
	common := []string{"--replicas", "2", "--stabilization-time", testnet.HarnessStabilization.String()}
	nodes := testnet.StartCluster(t, 2, testnet.Options{Args: common})
	small := testnet.StartNode(t, testnet.Options{Args: append(append([]string{}, common...),
		"--max-disk", "6MiB", "--join", nodes[0].URL(), "--join-token", testnet.JoinToken(t, nodes[0], time.Hour))})
	nodes = append(nodes, small)
	testnet.WaitConverged(t, nodes, 3, 3, 60*time.Second)

	// The first two images are pushed through the small node itself: it
	// holds one of their two copies, so it must copy each blob to the
	// node that lacks it before it may evict it (a hand-off). The others
	// are pushed through the first node.
	var imgs []*gcImage
	for i := range 4 {
		through := nodes[0]
		if i < 2 {
			through = small
		}
		c := testnet.NewClient(through.URL())
		img := newGCImage(testnet.UniqueRepo(fmt.Sprintf("e2e/evict-%d", i)), fmt.Appendf(nil, `{"architecture":"amd64","os":"linux","i":%d}`, i),
			testnet.RandomBytes(1<<20), testnet.RandomBytes(1<<20), testnet.RandomBytes(1<<20))
		img.pushBlobs(t, c)
		if err := img.putManifest(c); err != nil {
			t.Fatalf("pushing image %d: %v", i, err)
		}
		imgs = append(imgs, img)
	}
	var peak int64
	underBudget := func(after string) {
		t.Helper()
		var used int64
		if !testnet.Eventually(30*time.Second, func() bool {
			used = diskBytes(t, small)
			peak = max(peak, used)
			return used <= budget
		}) {
			t.Fatalf("after %s the small node holds %d bytes of blobs, over its --max-disk of %d", after, used, budget)
		}
	}
	underBudget("the pushes")
	for round := range 2 {
		for i, img := range imgs {
			img.pullsInFull(t, small)
			underBudget(fmt.Sprintf("pull %d of image %d", round+1, i))
		}
	}
	if t.Failed() {
		return
	}
	// No last copy, nor any copy short of --replicas, was evicted.
	for i, img := range imgs {
		for _, b := range img.blobs {
			d := digest.FromBytes(b)
			held := 0
			for _, n := range nodes {
				if holds(n, d) {
					held++
				}
			}
			if held < 2 {
				t.Errorf("blob %s of image %d is held by %d nodes, want at least --replicas (2)", d, i, held)
			}
		}
	}
	evicted, err := small.Metric(t.Context(), "meshreg_evictions_total", `result="evicted"`)
	if err != nil || evicted == 0 {
		t.Errorf("meshreg_evictions_total{result=evicted} on the small node = %v (%v), want > 0", evicted, err)
	}
	bytes, _ := small.Metric(t.Context(), "meshreg_evicted_bytes_total")
	handed, err := small.Metric(t.Context(), "meshreg_evictions_total", `result="handed_off"`)
	if err != nil || handed == 0 {
		t.Errorf("meshreg_evictions_total{result=handed_off} on the small node = %v (%v), want > 0 (it pushed blobs only one other node held)", handed, err)
	}
	if got, err := small.Metric(t.Context(), "meshreg_disk_budget_bytes"); err != nil || got != budget {
		t.Errorf("meshreg_disk_budget_bytes = %v (%v), want %d", got, err, budget)
	}
	// The status document shows the budget and the use, back under it (a
	// blob that committed after the last poll may take it over until the
	// next pass).
	var st struct {
		Disk struct {
			Budget int64 `json:"budget_bytes"`
			Used   int64 `json:"used_bytes"`
		} `json:"disk"`
	}
	if !testnet.Eventually(10*time.Second, func() bool {
		_, _, body, err := testnet.NewClient(small.URL()).Get(t.Context(), "/_meshreg/v1/status", http.Header{})
		return err == nil && json.Unmarshal(body, &st) == nil && st.Disk.Budget == budget && st.Disk.Used > 0 && st.Disk.Used <= budget
	}) {
		t.Errorf("status of the small node: disk budget %d, used %d, want %d and 0 < used <= budget", st.Disk.Budget, st.Disk.Used, budget)
	}
	t.Logf("small node: peak %d bytes of blobs observed (budget %d); evicted %v blobs (%v bytes), handed off %v", peak, budget, evicted, bytes, handed)
}

// TestDiskBudgetRefusesPushesWhenNothingCanBeEvicted: a node alone (no
// other node holds a copy of anything, so nothing may be evicted) with a
// 2 MiB --max-disk takes blobs until it passes the budget, then refuses
// new ones with 507 DENIED and a message that names the budget and why
// nothing can go. What it holds stays whole and pullable, and manifest
// PUTs (metadata, no blob bytes) still work.
func TestDiskBudgetRefusesPushesWhenNothingCanBeEvicted(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{Args: []string{"--max-disk", "2MiB"}})
	c := testnet.NewClient(n.URL())
	repo := testnet.UniqueRepo("e2e/budget")
	img := newGCImage(repo, []byte(`{"architecture":"amd64","os":"linux"}`), testnet.RandomBytes(3<<19), testnet.RandomBytes(3<<19))
	img.pushBlobs(t, c) // 3 MiB: the second layer passes the budget
	var err error
	if !testnet.Eventually(15*time.Second, func() bool {
		_, err = c.PushBytes(t.Context(), repo, testnet.RandomBytes(1<<10))
		return err != nil
	}) {
		t.Fatal("the node over its budget with nothing to evict still takes new blobs")
	}
	var he *testnet.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusInsufficientStorage {
		t.Fatalf("refusal: %v, want 507", err)
	}
	for _, want := range []string{`"code":"DENIED"`, "over its disk budget (--max-disk 2.0 MiB)", "nothing can be evicted", "only 0 other live nodes"} {
		if !strings.Contains(he.Body, want) {
			t.Errorf("refusal body %s does not say %q", he.Body, want)
		}
	}
	if err := img.putManifest(c); err != nil {
		t.Errorf("a manifest PUT over the blob budget: %v", err)
	}
	img.pullsInFull(t, n)
	if refused, err := n.Metric(t.Context(), "meshreg_writes_refused_total", `reason="budget"`); err != nil || refused == 0 {
		t.Errorf("meshreg_writes_refused_total{reason=budget} = %v (%v), want > 0", refused, err)
	}
	if stuck, err := n.Metric(t.Context(), "meshreg_evictions_total", `result="stuck"`); err != nil || stuck == 0 {
		t.Errorf("meshreg_evictions_total{result=stuck} = %v (%v), want > 0", stuck, err)
	}
	t.Logf("refusal: %s", he.Body)
}
