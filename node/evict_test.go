package node

import (
	"bytes"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api/oci"
)

// fakeBudget is a test-only evictor as the disk guard sees it.
type fakeBudget struct {
	budget, low int64
	stuck       string
	kicks       int
}

func (f *fakeBudget) Budget() int64 { return f.budget }
func (f *fakeBudget) Low() int64    { return f.low }
func (f *fakeBudget) Kick()         { f.kicks++ }
func (f *fakeBudget) Stuck() string { return f.stuck }

// TestDiskGuardBudget: under --max-disk new blobs are taken; at the budget
// they are taken while eviction may still free space (and a pass is asked
// for); once a pass found nothing to evict they get 507 DENIED saying
// which budget, how much is held and why nothing can go, while metadata
// writes (manifests, which hold no blob bytes) still pass.
func TestDiskGuardBudget(t *testing.T) {
	g, _, _, _ := newTestGuard(0)
	used := int64(5 << 20)
	g.used = func() int64 { return used }
	fb := &fakeBudget{budget: 6 << 20, low: 5 << 20}
	refused := &countingCounter{Counter: prometheus.NewCounter(prometheus.CounterOpts{Name: "budget"})}
	g.budget, g.budgetRefused = fb, refused

	if err := g.checkBlob(); err != nil || fb.kicks != 0 {
		t.Fatalf("under the budget: %v (kicks %d)", err, fb.kicks)
	}
	used = 7 << 20
	if err := g.checkBlob(); err != nil || fb.kicks != 1 {
		t.Fatalf("over the budget before any pass: %v (kicks %d), want it taken and a pass asked for", err, fb.kicks)
	}
	fb.stuck = "3 blobs are held by fewer than --replicas (2) other live nodes"
	err := g.checkBlob()
	var oe *oci.Error
	if !errors.As(err, &oe) || oe.HTTPStatus() != http.StatusInsufficientStorage || oe.Code != oci.Denied {
		t.Fatalf("over the budget with nothing to evict: %v, want 507 DENIED", err)
	}
	for _, want := range []string{"node 12D3KooWTest is over its disk budget (--max-disk 6.0 MiB)", "7.0 MiB of blobs held",
		"nothing can be evicted: 3 blobs are held by fewer than --replicas (2)", "raise --max-disk"} {
		if !strings.Contains(oe.Message, want) {
			t.Errorf("message %q does not say %q", oe.Message, want)
		}
	}
	if !errors.Is(err, ErrOverBudget) || refused.n != 1 {
		t.Errorf("refusal %v: wraps ErrOverBudget %v, counted %d", err, errors.Is(err, ErrOverBudget), refused.n)
	}
	if err := g.check(); err != nil {
		t.Errorf("a metadata write was refused over the blob budget: %v", err)
	}
	st := g.status()
	if st.BudgetBytes != 6<<20 || st.LowWaterBytes != 5<<20 || st.UsedBytes != 7<<20 || st.OverBudget != fb.stuck {
		t.Errorf("status = %+v, want the budget, low-water mark, use and reason", st)
	}
}

// TestMaxDiskLowDefault: without --max-disk-low, eviction goes down to 90%.
func TestMaxDiskLowDefault(t *testing.T) {
	c := Config{MaxDisk: 100 << 20}
	if got := c.maxDiskLow(); got != 90<<20 {
		t.Errorf("low-water mark of 100 MiB = %d, want 90 MiB", got)
	}
	c.MaxDiskLow = 50 << 20
	if got := c.maxDiskLow(); got != 50<<20 {
		t.Errorf("--max-disk-low 50MiB gave %d", got)
	}
}

// TestRecencyBounded: the recency index holds at most maxRecency blobs
// (one past it counts as read when written) and forgets an evicted one.
func TestRecencyBounded(t *testing.T) {
	var r recency
	for i := range maxRecency + 10 {
		r.touch(blobDigest(i), false)
	}
	if len(r.last) != maxRecency {
		t.Fatalf("recency holds %d blobs, want at most %d", len(r.last), maxRecency)
	}
	if !r.get(blobDigest(maxRecency + 5)).IsZero() {
		t.Error("a blob past the bound was tracked")
	}
	r.forget(blobDigest(0))
	if !r.get(blobDigest(0)).IsZero() {
		t.Error("an evicted blob is still tracked")
	}
}

func blobDigest(i int) digest.Digest { return digest.FromString(strconv.Itoa(i)) }

// TestEvictionFollowsReads: on nodes over the fake network, node 0 (a
// 2.5 KiB budget, --replicas 2) holds three 1 KiB blobs that both other
// nodes hold too. The oldest file was read by a client since: eviction
// takes the oldest one not read instead, down to the low-water mark. The
// evicted blob is "not held" for peers, and a client pull through node 0
// brings it back from a peer, whole.
func TestEvictionFollowsReads(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	n := fn.add("a", func(c *Config) { c.Replicas, c.MaxDisk, c.MaxDiskLow = 2, 2560, 2048 })
	fn.add("a", nil)
	fn.add("a", nil)
	if n.evictor == nil {
		t.Fatal("--max-disk set but no evictor")
	}
	var blobs [][]byte
	var ds []digest.Digest
	for i := range 3 {
		b, _ := randomBlob(uint64(100+i), 1024)
		var d digest.Digest
		for _, o := range fn.nodes {
			d = hold(t, o, "r/app", b)
		}
		// Written 3, 2 and 1 hours ago.
		mt := time.Now().Add(-time.Duration(3-i) * time.Hour)
		if err := os.Chtimes(blobFile(n, d), mt, mt); err != nil {
			t.Fatal(err)
		}
		blobs, ds = append(blobs, b), append(ds, d)
	}
	if got, err := pull(t.Context(), n, "r/app", ds[0]); err != nil || !bytes.Equal(got, blobs[0]) {
		t.Fatalf("pulling the oldest blob: %v", err)
	}
	res, err := n.evictor.Pass(t.Context())
	if err != nil || res.Evicted != 1 || res.Stuck != "" {
		t.Fatalf("pass = %+v, %v; want one blob evicted (3 KiB down to 2 KiB)", res, err)
	}
	for i, want := range []bool{true, false, true} {
		if _, err := os.Stat(blobFile(n, ds[i])); (err == nil) != want {
			t.Errorf("blob %d on disk = %v after the pass, want %v (blob 0 was read, blob 1 is the oldest not read)", i, err == nil, want)
		}
	}
	if has := fn.nodes[1].replicas.Holders(t.Context(), []peer.ID{n.host.ID()}, ds[1:2]); len(has[ds[1]]) != 0 {
		t.Error("node 0 still says it holds the evicted blob")
	}
	if got, err := pull(t.Context(), n, "r/app", ds[1]); err != nil || !bytes.Equal(got, blobs[1]) {
		t.Fatalf("pulling the evicted blob through node 0: %v", err)
	}
	if v := counterValue(t, n.evictMetrics.evictions.WithLabelValues("evicted")); v != 1 {
		t.Errorf("meshreg_evictions_total{result=evicted} = %v, want 1", v)
	}
}

// blobFile is where n's blob store keeps d.
func blobFile(n *Node, d digest.Digest) string {
	return filepath.Join(n.cfg.DataDir, "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded())
}

// TestOverBudgetRefusesNewBlobs: node 0 (1 KiB budget, --replicas 2, one
// other node) holds a 2 KiB blob and can evict nothing. A push to it and a
// client pull of a blob only its peer holds are refused with 507 DENIED
// naming the budget; a pull of what it holds still works.
func TestOverBudgetRefusesNewBlobs(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	n := fn.add("a", func(c *Config) { c.Replicas, c.MaxDisk = 2, 1024 })
	other := fn.add("a", nil)
	held, _ := randomBlob(200, 2048)
	hold(t, n, "r/app", held)
	hold(t, other, "r/app", held)
	res, err := n.evictor.Pass(t.Context())
	if err != nil || res.Evicted != 0 || !strings.Contains(res.Stuck, "only 1 other live nodes") {
		t.Fatalf("pass = %+v, %v; want nothing evicted and stuck: one other live node, two needed", res, err)
	}
	only, _ := randomBlob(201, 512)
	onlyThere := hold(t, other, "r/app", only)
	assertOverBudget := func(what string, err error) {
		t.Helper()
		var oe *oci.Error
		if !errors.As(err, &oe) || oe.HTTPStatus() != http.StatusInsufficientStorage || oe.Code != oci.Denied ||
			!strings.Contains(oe.Message, "over its disk budget (--max-disk 1.0 KiB)") {
			t.Errorf("%s: %v, want 507 DENIED over the disk budget", what, err)
		}
	}
	_, err = pull(t.Context(), n, "r/app", onlyThere)
	assertOverBudget("a pull of a blob only the peer holds", err)
	b, d := randomBlob(202, 100)
	_, err = n.PutBlob(t.Context(), "r/app", d, bytes.NewReader(b))
	assertOverBudget("a push", err)
	if got, err := pull(t.Context(), n, "r/app", digest.FromBytes(held)); err != nil || !bytes.Equal(got, held) {
		t.Errorf("a pull of a blob node 0 holds: %v", err)
	}
}

// TestEvictionMirroredNeedsOneOtherCopy: node 0 (budget 1.5 KiB, --replicas
// 2) and one other node both hold a pushed blob and a blob of a mirrored
// repository (its upstream configured). The mirrored one was read last, yet
// it is the one that goes: its upstream can give it back, so one other
// copy is enough, while the pushed one needs two.
func TestEvictionMirroredNeedsOneOtherCopy(t *testing.T) {
	t.Parallel()
	origins := &countingOrigins{blobs: map[digest.Digest][]byte{}}
	fn := newFakeNet(t)
	n := fn.add("a", func(c *Config) { c.Replicas, c.MaxDisk, c.MaxDiskLow, c.Origins = 2, 1536, 1024, origins })
	other := fn.add("a", func(c *Config) { c.Origins = origins })
	pushed, _ := randomBlob(300, 1024)
	mirrored, _ := randomBlob(301, 1024)
	var dp, dm digest.Digest
	for _, o := range []*Node{n, other} {
		dp = hold(t, o, "r/app", pushed)
		dm = hold(t, o, "up.example/library/app", mirrored)
	}
	for _, read := range []struct {
		repo string
		d    digest.Digest
	}{{"r/app", dp}, {"up.example/library/app", dm}} {
		if _, err := pull(t.Context(), n, read.repo, read.d); err != nil {
			t.Fatalf("pulling %s@%s: %v", read.repo, read.d, err)
		}
	}
	res, err := n.evictor.Pass(t.Context())
	if err != nil || res.Evicted != 1 {
		t.Fatalf("pass = %+v, %v; want the mirrored blob evicted", res, err)
	}
	if _, err := os.Stat(blobFile(n, dm)); err == nil {
		t.Error("the mirrored blob (one other copy, its upstream configured) was kept")
	}
	if _, err := os.Stat(blobFile(n, dp)); err != nil {
		t.Error("the pushed blob (one other copy, --replicas 2) was evicted")
	}
	if !other.blobs.Held(dm) {
		t.Error("the other node's copy of the mirrored blob is gone")
	}
}
