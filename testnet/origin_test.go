package testnet_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/testnet"
)

// slowOrigin is an upstream shared by every node of a test: it serves one
// blob in chunks with a pause between them, counts its calls and bytes,
// and notes when a stream delivered the blob's last byte.
type slowOrigin struct {
	blob  []byte
	chunk int
	pause time.Duration

	calls atomic.Int32
	sent  atomic.Int64
	mu    sync.Mutex
	offs  []int64
	ended time.Time // when the first stream that reached the end did
}

func (o *slowOrigin) Origin(name string) (fetch.OriginFunc, bool) {
	if name != "up.test" {
		return nil, false
	}
	return o.fetch, true
}

func (o *slowOrigin) fetch(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error) {
	o.calls.Add(1)
	o.mu.Lock()
	o.offs = append(o.offs, offset)
	o.mu.Unlock()
	pos := offset
	return io.NopCloser(readerOf(func(p []byte) (int, error) {
		if pos >= int64(len(o.blob)) {
			return 0, io.EOF
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(o.pause):
		}
		n := copy(p[:min(len(p), o.chunk)], o.blob[pos:])
		pos += int64(n)
		o.sent.Add(int64(n))
		if pos == int64(len(o.blob)) {
			o.mu.Lock()
			if o.ended.IsZero() {
				o.ended = time.Now()
			}
			o.mu.Unlock()
		}
		return n, nil
	})), nil
}

func (o *slowOrigin) offsets() []int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.offs)
}

type readerOf func([]byte) (int, error)

func (f readerOf) Read(p []byte) (int, error) { return f(p) }

// startOriginCluster starts size in-process nodes with origin up.test and
// waits until each sees every other as live.
func startOriginCluster(t *testing.T, size int, origin fetch.Origins) []*testnet.InProcessNode {
	t.Helper()
	nodes := testnet.StartInProcessCluster(t, size, func(i int, c *node.Config) {
		c.Origins = origin
		c.PeerIdleTimeout = 5 * time.Second
	})
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range nodes {
		for len(n.N.Status(t.Context()).(node.Status).Peers) < size-1 {
			if time.Now().After(deadline) {
				t.Fatal("the nodes never all heard from each other")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nodes
}

// pullResult is what one node's client read saw.
type pullResult struct {
	data      []byte
	err       error
	firstByte time.Time
}

// pullOrigin reads the blob through n as a client of a mirrored
// repository does, noting when the first byte arrived.
func pullOrigin(ctx context.Context, n *testnet.InProcessNode, d digest.Digest, size int64) pullResult {
	r, err := n.N.OpenOriginBlob(ctx, d, size, fetch.Origin{Name: "up.test", Repo: "library/app"})
	if err != nil {
		return pullResult{err: err}
	}
	defer r.Close()
	var res pullResult
	buf := make([]byte, 32<<10)
	for {
		m, err := r.Read(buf)
		if m > 0 && res.firstByte.IsZero() {
			res.firstByte = time.Now()
		}
		res.data = append(res.data, buf[:m]...)
		if err == io.EOF {
			return res
		}
		if err != nil {
			res.err = err
			return res
		}
	}
}

func randomBytes(seed uint64, size int) []byte {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func peerIDs(nodes []*testnet.InProcessNode) []peer.ID {
	var out []peer.ID
	for _, n := range nodes {
		out = append(out, n.PeerID())
	}
	return out
}

// TestOriginFetchedOncePerCluster: five nodes (real libp2p, Raft, DHT)
// ask at once for an 8 MiB blob that none holds, from an origin that
// serves it slowly: the origin is called once in all (a second call only
// to resume), every node ends with the blob, and a node that was not
// chosen to fetch it streams its first byte to its client before the
// origin finished sending (it cut through behind the chosen node).
func TestOriginFetchedOncePerCluster(t *testing.T) {
	t.Parallel()
	blob := randomBytes(1, 8<<20)
	d := digest.FromBytes(blob)
	origin := &slowOrigin{blob: blob, chunk: 64 << 10, pause: 25 * time.Millisecond}
	nodes := startOriginCluster(t, 5, origin)
	chosen := fetch.Choose(d, peerIDs(nodes))

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	results := make([]pullResult, len(nodes))
	var wg sync.WaitGroup
	start := time.Now()
	for i, n := range nodes {
		wg.Go(func() { results[i] = pullOrigin(ctx, n, d, int64(len(blob))) })
	}
	wg.Wait()
	for i, r := range results {
		t.Logf("node %d (chosen %v): first byte after %s", i, nodes[i].PeerID() == chosen, r.firstByte.Sub(start))
	}
	origin.mu.Lock()
	ended := origin.ended
	origin.mu.Unlock()
	for i, r := range results {
		if r.err != nil || !bytes.Equal(r.data, blob) {
			t.Fatalf("node %d: %v (%d bytes, identical %v)", i, r.err, len(r.data), bytes.Equal(r.data, blob))
		}
		if nodes[i].PeerID() != chosen && !r.firstByte.Before(ended) {
			t.Errorf("node %d (not chosen) streamed its first byte %s after the origin finished", i, r.firstByte.Sub(ended))
		}
	}
	offs := origin.offsets()
	if len(offs) == 0 || len(offs) > 2 || offs[0] != 0 || (len(offs) == 2 && offs[1] == 0) {
		t.Errorf("origin calls at offsets %v; want one call (and at most one resume)", offs)
	}
	if got := origin.sent.Load(); got > int64(len(blob))*105/100 {
		t.Errorf("origin sent %d bytes for a blob of %d", got, len(blob))
	}
}

// TestOriginFetchSurvivesTheChosenNodeDying: the node chosen to fetch a
// blob from the origin is stopped mid-fetch; the others still get the
// whole blob (each fetching from the origin itself, after the bytes it
// has) within a bounded time.
func TestOriginFetchSurvivesTheChosenNodeDying(t *testing.T) {
	t.Parallel()
	blob := randomBytes(2, 8<<20)
	d := digest.FromBytes(blob)
	origin := &slowOrigin{blob: blob, chunk: 64 << 10, pause: 25 * time.Millisecond}
	nodes := startOriginCluster(t, 3, origin)
	chosen := fetch.Choose(d, peerIDs(nodes))
	var victim *testnet.InProcessNode
	var others []*testnet.InProcessNode
	for _, n := range nodes {
		if n.PeerID() == chosen {
			victim = n
		} else {
			others = append(others, n)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	start := time.Now()
	results := make([]pullResult, len(others))
	var wg sync.WaitGroup
	for i, n := range others {
		wg.Go(func() { results[i] = pullOrigin(ctx, n, d, int64(len(blob))) })
	}
	for origin.sent.Load() < 2<<20 {
		if time.Since(start) > 30*time.Second {
			t.Fatal("the origin never sent 2 MiB")
		}
		time.Sleep(10 * time.Millisecond)
	}
	victim.Stop()
	wg.Wait()
	for i, r := range results {
		if r.err != nil || !bytes.Equal(r.data, blob) {
			t.Fatalf("survivor %d: %v (%d bytes, identical %v)", i, r.err, len(r.data), bytes.Equal(r.data, blob))
		}
	}
	offs := origin.offsets()
	t.Logf("origin calls at offsets %v; %d bytes sent for %d; survivors done in %s", offs, origin.sent.Load(), len(blob), time.Since(start))
	resumed := false
	for _, o := range offs[1:] {
		resumed = resumed || o > 0
	}
	if !resumed {
		t.Errorf("no survivor resumed after the bytes it had (origin calls at %v)", offs)
	}
}
