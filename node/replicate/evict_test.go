package replicate

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet/tlog"
)

// evictorOf makes node n's evictor with the given budget and low-water
// mark; read gives the last read time of each blob (missing: the epoch).
func evictorOf(t *testing.T, n *fakeNode, budget, low int64, read map[digest.Digest]time.Time) *Evictor {
	t.Helper()
	e, err := NewEvictor(n.r, EvictConfig{
		Budget: budget, Low: low, Used: n.blobs.used, Files: n.blobs,
		LastRead: func(d digest.Digest) time.Time { return read[d] },
		Log:      tlog.Logger(t, slog.LevelDebug),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func blobNamed(i int) digest.Digest { return digest.FromString(fmt.Sprintf("blob-%d", i)) }

// TestEvictLeastRecentlyReadFirst: a node over its budget evicts the blobs
// read longest ago, down to the low-water mark and no further.
func TestEvictLeastRecentlyReadFirst(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t, 2, "a", "a", "a")
	base := time.Unix(1_700_000_000, 0)
	read := map[digest.Digest]time.Time{}
	// Read longest ago first: 0, 3, 2, 1.
	for i, ago := range []time.Duration{4, 1, 2, 3} {
		d := blobNamed(i)
		read[d] = base.Add(-ago * time.Hour)
		for _, n := range c.nodes {
			n.blobs.put(d, 10)
		}
	}
	e := evictorOf(t, c.nodes[0], 35, 25, read)
	res, err := e.Pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Evicted != 2 || res.Bytes != 20 || res.Stuck != "" {
		t.Fatalf("pass = %+v, want 2 blobs (20 bytes) evicted and not stuck", res)
	}
	for i, want := range []bool{false, true, true, false} {
		if got := c.nodes[0].blobs.Held(blobNamed(i)); got != want {
			t.Errorf("blob %d (read %s ago) held = %v, want %v", i, base.Sub(read[blobNamed(i)]), got, want)
		}
	}
	for i := range 4 {
		if h := c.holders(blobNamed(i)); !slices.Contains(h, 1) || !slices.Contains(h, 2) {
			t.Errorf("blob %d: the other nodes' copies changed: holders %v", i, h)
		}
	}
	// Under the budget: a second pass does nothing.
	if res, _ := e.Pass(context.Background()); res.Evicted != 0 {
		t.Fatalf("a pass under the budget evicted %d blobs", res.Evicted)
	}
}

// TestEvictOnlyWhatEnoughOthersHold: node 0 (over its budget) evicts a blob
// only while --replicas other live nodes hold it, handing it off to one
// that lacks it first; never the last copies, never one in use, never one
// it promised a peer to keep.
func TestEvictOnlyWhatEnoughOthersHold(t *testing.T) {
	t.Parallel()
	d := blobNamed(0)
	tests := []struct {
		name      string
		replicas  int
		heldBy    []int // besides node 0
		down      []int
		refuse    []int // nodes whose fetches fail (over their budget)
		pinned    bool  // node 0 is serving it
		promised  bool  // node 0 told node 1 it keeps it (HasRequest.Hold)
		mirrored  bool  // its upstream can give it back (Refetchable)
		wantHeld  []int
		wantStuck string
	}{
		{name: "two others hold it", replicas: 2, heldBy: []int{1, 2}, wantHeld: []int{1, 2}},
		{name: "handed off to a node that lacks it", replicas: 2, heldBy: []int{1}, wantHeld: []int{1, 2}},
		{name: "the only other copy and no room elsewhere", replicas: 2, heldBy: []int{1}, refuse: []int{2},
			wantHeld: []int{0, 1}, wantStuck: "held by fewer than --replicas (2) other live nodes and could not be copied"},
		{name: "the last copy", replicas: 1, refuse: []int{1, 2}, wantHeld: []int{0}, wantStuck: "fewer than --replicas (1)"},
		{name: "a holder is down", replicas: 2, heldBy: []int{1, 2}, down: []int{2}, refuse: []int{2},
			wantHeld: []int{0, 1, 2}, wantStuck: "only 1 other live nodes"},
		{name: "in use", replicas: 2, heldBy: []int{1, 2}, pinned: true, wantHeld: []int{0, 1, 2}, wantStuck: "1 blobs are in use"},
		{name: "promised to a peer", replicas: 1, heldBy: []int{1}, promised: true, wantHeld: []int{0, 1}, wantStuck: "in use"},
		{name: "mirrored: one other copy is enough", replicas: 2, heldBy: []int{1}, refuse: []int{2}, mirrored: true, wantHeld: []int{1}},
		{name: "mirrored: handed off when no other holds it", replicas: 2, mirrored: true, refuse: []int{1}, wantHeld: []int{2}},
		{name: "mirrored: never the last copy", replicas: 2, mirrored: true, refuse: []int{1, 2}, wantHeld: []int{0},
			wantStuck: "held by fewer than --replicas (2) other live nodes and could not be copied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newFakeCluster(t, tc.replicas, "a", "a", "a")
			for _, i := range append([]int{0}, tc.heldBy...) {
				c.nodes[i].blobs.put(d, 100)
			}
			for _, i := range tc.down {
				c.down[c.nodes[i].id] = true
			}
			for _, i := range tc.refuse {
				c.nodes[i].refuse = true
			}
			n := c.nodes[0]
			if tc.pinned {
				defer n.pins.Pin(d)()
			}
			if tc.promised {
				// Node 1 counts on node 0's copy to evict its own.
				if got := c.nodes[1].r.holders(context.Background(), []peer.ID{n.id}, []digest.Digest{d}, true); len(got[d]) != 1 {
					t.Fatalf("node 0 does not say it holds the blob: %v", got)
				}
			}
			e := evictorOf(t, n, 50, 40, nil)
			if tc.mirrored {
				e.cfg.Refetchable = func(digest.Digest) bool { return true }
			}
			res, err := e.Pass(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got := c.holders(d); !slices.Equal(got, tc.wantHeld) {
				t.Errorf("holders after the pass = %v, want %v (pass %+v)", got, tc.wantHeld, res)
			}
			if tc.wantStuck == "" && res.Stuck != "" || !strings.Contains(res.Stuck, tc.wantStuck) {
				t.Errorf("stuck = %q, want it to contain %q", res.Stuck, tc.wantStuck)
			}
			if got := e.Stuck(); got != res.Stuck {
				t.Errorf("Stuck() = %q after a pass that said %q", got, res.Stuck)
			}
		})
	}
}

// TestEvictTwoNodesAtOnceKeepACopy: with --replicas 1 and two nodes over
// budget holding the same blob, each could count on the other's copy and
// both evict. The holds make one of them keep it, whatever the timing.
func TestEvictTwoNodesAtOnceKeepACopy(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		c := newFakeCluster(t, 1, "a", "a")
		for i := range 4 {
			for _, n := range c.nodes {
				n.blobs.put(blobNamed(i), 100)
			}
		}
		e0, e1 := evictorOf(t, c.nodes[0], 50, 10, nil), evictorOf(t, c.nodes[1], 50, 10, nil)
		done := make(chan struct{})
		go func() { _, _ = e1.Pass(context.Background()); close(done) }()
		_, _ = e0.Pass(context.Background())
		<-done
		for i := range 4 {
			if len(c.holders(blobNamed(i))) == 0 {
				t.Fatalf("round %d: blob %d was evicted by both nodes: no copy left", round, i)
			}
		}
	}
}
