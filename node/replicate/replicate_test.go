package replicate

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ptest "github.com/libp2p/go-libp2p/core/test"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshreg/meshreg/node/gc"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// fakeCluster is a few replicators wired to one another in memory: every
// node is a member and live; a fetch copies the blob from the first hinted
// peer that holds it.
type fakeCluster struct {
	nodes []*fakeNode
	byID  map[peer.ID]*fakeNode
	// down peers answer nothing.
	down map[peer.ID]bool
}

type fakeNode struct {
	c      *fakeCluster
	id     peer.ID
	zone   string
	blobs  *fakeBlobs
	pins   *gc.Pins
	r      *Replicator
	copies prometheus.Counter
	// refuse makes the node's fetches fail.
	refuse bool
}

type fakeBlobs struct {
	mu   sync.Mutex
	held map[digest.Digest]int64
}

func (b *fakeBlobs) Held(d digest.Digest) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.held[d]
	return ok
}

func (b *fakeBlobs) Verify(_ context.Context, d digest.Digest, _ bool, _ func(int) error) error {
	if !b.Held(d) {
		return errors.New("not found")
	}
	return nil
}

func (b *fakeBlobs) Walk(fn func(digest.Digest, int64) bool) error {
	b.mu.Lock()
	held := make(map[digest.Digest]int64, len(b.held))
	for d, s := range b.held {
		held[d] = s
	}
	b.mu.Unlock()
	for d, s := range held {
		if !fn(d, s) {
			break
		}
	}
	return nil
}

func (b *fakeBlobs) Delete(d digest.Digest) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.held[d]; !ok {
		return errors.New("not found")
	}
	delete(b.held, d)
	return nil
}

// used is the bytes held.
func (b *fakeBlobs) used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, s := range b.held {
		n += s
	}
	return n
}

func (b *fakeBlobs) put(d digest.Digest, size int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held[d] = size
}

// newFakeCluster makes one node per zone given, sorted by id (nodes[0]
// has the lowest).
func newFakeCluster(t *testing.T, replicas int, zones ...string) *fakeCluster {
	c := &fakeCluster{byID: map[peer.ID]*fakeNode{}, down: map[peer.ID]bool{}}
	ids := make([]peer.ID, len(zones))
	for i := range ids {
		ids[i] = ptest.RandPeerIDFatal(t)
	}
	slices.Sort(ids)
	log := tlog.Logger(t, slog.LevelDebug)
	for i, z := range zones {
		n := &fakeNode{c: c, id: ids[i], zone: z, blobs: &fakeBlobs{held: map[digest.Digest]int64{}}, pins: &gc.Pins{},
			copies: prometheus.NewCounter(prometheus.CounterOpts{Name: "copies"})}
		n.r = New(Config{Replicas: replicas, MaxMessage: 64 << 10, Net: n, Blobs: n.blobs, Cluster: n, Fetch: n.fetch, Pins: n.pins,
			Copies: n.copies, Log: log.With("node", i)})
		c.nodes = append(c.nodes, n)
		c.byID[n.id] = n
	}
	return c
}

func (n *fakeNode) ID() peer.ID { return n.id }

func (n *fakeNode) Request(ctx context.Context, to peer.ID, proto protocol.ID, req []byte, _ int) ([]byte, error) {
	dst := n.c.byID[to]
	if dst == nil || n.c.down[to] {
		return nil, fmt.Errorf("peer %s unreachable", to)
	}
	switch proto {
	case HasProtocol:
		return dst.r.ServeHas(ctx, n.id, req), nil
	case ReplicateProtocol:
		return dst.r.ServeReplicate(ctx, n.id, req), nil
	}
	return nil, fmt.Errorf("protocol %s not served", proto)
}

func (n *fakeNode) IsMember(p peer.ID) bool { return n.c.byID[p] != nil }

func (n *fakeNode) Live() []peer.ID {
	var live []peer.ID
	for _, o := range n.c.nodes {
		if o != n && !n.c.down[o.id] {
			live = append(live, o.id)
		}
	}
	return live
}

// SpreadFirst puts the peers of other zones first.
func (n *fakeNode) SpreadFirst(peers []peer.ID) {
	slices.SortStableFunc(peers, func(x, y peer.ID) int {
		return cmp.Compare(b2i(n.c.byID[x].zone == n.zone), b2i(n.c.byID[y].zone == n.zone))
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (n *fakeNode) fetch(_ context.Context, d digest.Digest, size int64, hint []peer.ID) error {
	if n.refuse {
		return errors.New("disk full")
	}
	for _, p := range hint {
		if src := n.c.byID[p]; src != nil && !n.c.down[p] && src.blobs.Held(d) {
			n.blobs.put(d, size)
			return nil
		}
	}
	return errors.New("no peer holds it")
}

// holders lists the indexes of the nodes that hold d.
func (c *fakeCluster) holders(d digest.Digest) []int {
	var out []int
	for i, n := range c.nodes {
		if n.blobs.Held(d) {
			out = append(out, i)
		}
	}
	return out
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestEnsure(t *testing.T) {
	t.Parallel()
	d := digest.FromString("layer")
	tests := []struct {
		name     string
		replicas int
		zones    []string
		// heldBy are the nodes holding d before; nodes[0] ensures.
		heldBy  []int
		down    []int
		refuse  []int
		want    []int // holders after
		wantErr string
	}{
		{name: "copies to the other zone first", replicas: 2, zones: []string{"a", "a", "b"}, heldBy: []int{0}, want: []int{0, 2}},
		{name: "up to the target", replicas: 3, zones: []string{"a", "a", "b", "b"}, heldBy: []int{0}, want: []int{0, 2, 3}},
		{name: "target capped by the live nodes", replicas: 5, zones: []string{"a", "b"}, heldBy: []int{0}, want: []int{0, 1}},
		{name: "enough holders already", replicas: 2, zones: []string{"a", "b", "b"}, heldBy: []int{0, 1}, want: []int{0, 1}},
		{name: "the pusher lacks it: it copies it itself", replicas: 2, zones: []string{"a", "b"}, heldBy: []int{1}, want: []int{0, 1}},
		{name: "no live holder: stored anyway", replicas: 2, zones: []string{"a", "b", "b"}, heldBy: []int{1}, down: []int{1}, want: []int{1}},
		{name: "nobody can take a copy", replicas: 2, zones: []string{"a", "b"}, heldBy: []int{0}, refuse: []int{1}, want: []int{0},
			wantErr: "is held by 1 of 2 nodes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newFakeCluster(t, tc.replicas, tc.zones...)
			for _, i := range tc.heldBy {
				c.nodes[i].blobs.put(d, 5)
			}
			for _, i := range tc.down {
				c.down[c.nodes[i].id] = true
			}
			for _, i := range tc.refuse {
				c.nodes[i].refuse = true
			}
			err := c.nodes[0].r.Ensure(t.Context(), []Ref{{Digest: d, Size: 5}})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Ensure = %v, want %q", err, tc.wantErr)
			}
			if got := c.holders(d); !slices.Equal(got, tc.want) {
				t.Errorf("held by %v, want %v", got, tc.want)
			}
			if got, want := counter(t, c.nodes[0].copies), float64(len(tc.want)-len(tc.heldBy)); got != want {
				t.Errorf("copies counted %v, want %v", got, want)
			}
		})
	}
}

// TestSweepLeavesTheRepairToTheLowestID: both holders see the blob short
// of copies; only the lowest-id one copies it, the other counts it.
func TestSweepLeavesTheRepairToTheLowestID(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t, 3, "a", "a", "a", "b")
	d := digest.FromString("blob")
	c.nodes[0].blobs.put(d, 4)
	c.nodes[1].blobs.put(d, 4)

	if under, repaired, err := c.nodes[1].r.Sweep(t.Context()); err != nil || under != 1 || repaired != 0 {
		t.Fatalf("higher-id holder's sweep: %d under, %d repaired, %v; want 1, 0", under, repaired, err)
	}
	if under, repaired, err := c.nodes[0].r.Sweep(t.Context()); err != nil || under != 0 || repaired != 1 {
		t.Fatalf("lowest-id holder's sweep: %d under, %d repaired, %v; want 0, 1", under, repaired, err)
	}
	if got := c.holders(d); !slices.Equal(got, []int{0, 1, 3}) {
		t.Errorf("held by %v, want 0, 1 and the node of the other zone (3)", got)
	}
	if under, repaired, _ := c.nodes[0].r.Sweep(t.Context()); under != 0 || repaired != 0 {
		t.Errorf("a second sweep: %d under, %d repaired; want nothing to do", under, repaired)
	}
}

func TestHoldersCountsOnlyPeersThatAnswer(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t, 3, "a", "a", "b")
	d, e := digest.FromString("d"), digest.FromString("e")
	c.nodes[1].blobs.put(d, 1)
	c.nodes[2].blobs.put(d, 1)
	c.nodes[2].blobs.put(e, 1)
	c.down[c.nodes[2].id] = true
	got := c.nodes[0].r.Holders(t.Context(), []peer.ID{c.nodes[1].id, c.nodes[2].id}, []digest.Digest{d, e})
	if !slices.Equal(got[d], []peer.ID{c.nodes[1].id}) || len(got[e]) != 0 {
		t.Errorf("holders = %v, want only node 1 for d", got)
	}
}

func TestServeRefusesStrangers(t *testing.T) {
	t.Parallel()
	c := newFakeCluster(t, 2, "a")
	n := c.nodes[0]
	d := digest.FromString("x")
	n.blobs.put(d, 1)
	stranger := ptest.RandPeerIDFatal(t)
	has, _ := json.Marshal(HasRequest{Digests: []digest.Digest{d}})
	if out := n.r.ServeHas(t.Context(), stranger, has); out != nil {
		t.Errorf("has answered a stranger: %s", out)
	}
	req, _ := json.Marshal(Request{Digest: digest.FromString("y"), Size: 1})
	var res Result
	if err := json.Unmarshal(n.r.ServeReplicate(t.Context(), stranger, req), &res); err != nil || res.Error != "not a member of this cluster" {
		t.Errorf("replicate from a stranger = %+v, %v", res, err)
	}
	if err := json.Unmarshal(n.r.ServeReplicate(t.Context(), n.id, []byte("{")), &res); err != nil || res.Error != "bad request" {
		t.Errorf("a bad replicate request = %+v, %v", res, err)
	}
	var hres HasResult
	if err := json.Unmarshal(n.r.ServeHas(t.Context(), n.id, has), &hres); err != nil || !slices.Equal(hres.Has, []bool{true}) {
		t.Errorf("has from a member = %+v, %v", hres, err)
	}
}
