package node

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/node/fetch"
)

// countingOrigins is origin "up.example" serving blobs from a map, counting
// its calls.
type countingOrigins struct {
	mu    sync.Mutex
	blobs map[digest.Digest][]byte
	calls atomic.Int32
}

func (o *countingOrigins) Origin(name string) (fetch.OriginFunc, bool) {
	if name != "up.example" {
		return nil, false
	}
	return func(_ context.Context, _ string, d digest.Digest, _, offset int64) (io.ReadCloser, error) {
		o.calls.Add(1)
		o.mu.Lock()
		defer o.mu.Unlock()
		return io.NopCloser(bytes.NewReader(o.blobs[d][offset:])), nil
	}, true
}

// TestHostileMemberCannotMakeTheChosenNodeFetch: a member asking over the
// origin-fetch protocol for an unknown origin, an oversized blob or a bad
// repository name is refused, and nothing is fetched; a non-member is not
// even let in.
func TestHostileMemberCannotMakeTheChosenNodeFetch(t *testing.T) {
	t.Parallel()
	origins := &countingOrigins{blobs: map[digest.Digest][]byte{}}
	fn := newFakeNet(t)
	n := fn.add("a", func(c *Config) { c.Origins = origins })
	hostile := fn.add("b", nil)
	good := fetch.OriginRequest{Digest: digest.FromString("x"), Size: 1, Origin: "up.example", Repo: "library/app"}
	for _, tc := range []struct {
		name   string
		edit   func(*fetch.OriginRequest)
		wantIn string
	}{
		{"unknown origin", func(r *fetch.OriginRequest) { r.Origin = "169.254.169.254" }, "not configured"},
		{"a URL for an origin", func(r *fetch.OriginRequest) { r.Origin = "http://127.0.0.1:1/" }, "not configured"},
		{"oversized", func(r *fetch.OriginRequest) { r.Size = 1 << 50 }, "out of bounds"},
		{"bad repository", func(r *fetch.OriginRequest) { r.Repo = "../../etc/passwd" }, "invalid repository"},
	} {
		req := good
		tc.edit(&req)
		raw, _ := json.Marshal(req)
		resp, err := hostile.host.Request(t.Context(), n.host.ID(), originProtocol, raw, maxControlLen)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var a originAnswer
		if err := json.Unmarshal(resp, &a); err != nil || a.OK || !strings.Contains(a.Message, tc.wantIn) {
			t.Errorf("%s: answer %s, want a refusal saying %q", tc.name, resp, tc.wantIn)
		}
	}
	if got := n.fetches.InProgress(); got != 0 {
		t.Errorf("%d fetches started", got)
	}
	if got := origins.calls.Load(); got != 0 {
		t.Errorf("the origin was called %d times", got)
	}
	stranger, err := fn.net.NewTransport()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(good)
	if resp, err := stranger.Request(t.Context(), n.host.ID(), originProtocol, raw, maxControlLen); err == nil {
		t.Errorf("a non-member was answered: %s", resp)
	}
}

// TestMirroredRepositoryReadsFromItsOrigin: a blob linked in repository
// up.example/library/app that no node holds is read from origin
// up.example, repository library/app, and fetched there once for both
// nodes; a repository whose first component is no origin is never sent
// to one.
func TestMirroredRepositoryReadsFromItsOrigin(t *testing.T) {
	t.Parallel()
	blob, d := randomBlob(11, 3<<20)
	origins := &countingOrigins{blobs: map[digest.Digest][]byte{d: blob}}
	fn := newFakeNet(t)
	a := fn.add("a", func(c *Config) { c.Origins = origins })
	b := fn.add("b", func(c *Config) { c.Origins = origins })
	for _, repo := range []string{"up.example/library/app", "other.example/library/app"} {
		if err := a.meta.LinkBlob(t.Context(), repo, d, int64(len(blob))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pull(t.Context(), a, "other.example/library/app", d); err == nil {
		t.Fatal("a blob of a repository with no origin was read from somewhere")
	}
	if got := origins.calls.Load(); got != 0 {
		t.Fatalf("origin called %d times for a repository that is not its mirror", got)
	}
	var wg sync.WaitGroup
	for _, n := range []*Node{a, b} {
		wg.Go(func() {
			got, err := pull(t.Context(), n, "up.example/library/app", d)
			if err != nil || !bytes.Equal(got, blob) {
				t.Errorf("pull: %v (%d bytes)", err, len(got))
			}
		})
	}
	wg.Wait()
	if got := origins.calls.Load(); got != 1 {
		t.Errorf("origin called %d times for two nodes, want once", got)
	}
}

// TestOriginFetchPerRegion: with --upstream-fetch region, a node chooses
// the fetcher among the nodes of its own region: alone in region r2, it
// fetches from the origin itself a blob that the cluster-wide choice
// gives to a node of r1; by default it asks that node.
func TestOriginFetchPerRegion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                  string
		perRegion             bool
		wantHere, wantAskedR1 float64
	}{
		{"per cluster", false, 0, 1},
		{"per region", true, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fn := newFakeNet(t)
			origins := &countingOrigins{blobs: map[digest.Digest][]byte{}}
			var nodes []*Node
			var ids []peer.ID
			for i, region := range []string{"r1", "r1", "r2"} {
				n := fn.add(string(rune('a'+i)), func(c *Config) {
					c.Origins, c.Region, c.OriginFetchPerRegion = origins, region, tc.perRegion
				})
				nodes = append(nodes, n)
				ids = append(ids, n.host.ID())
			}
			r2 := nodes[2]
			// A blob the cluster-wide choice gives to a node of r1.
			var blob []byte
			var d digest.Digest
			for seed := uint64(100); ; seed++ {
				if blob, d = randomBlob(seed, 1<<20); fetch.Choose(d, ids) != r2.host.ID() {
					break
				}
			}
			origins.blobs[d] = blob
			if err := nodes[0].meta.LinkBlob(t.Context(), "up.example/app", d, int64(len(blob))); err != nil {
				t.Fatal(err)
			}
			got, err := pull(t.Context(), r2, "up.example/app", d)
			if err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("pull: %v (%d bytes)", err, len(got))
			}
			if got := origins.calls.Load(); got != 1 {
				t.Errorf("origin called %d times, want once", got)
			}
			// The client's last byte comes at the commit; the fetch ends
			// (and counts) right after.
			for deadline := time.Now().Add(5 * time.Second); r2.fetches.InProgress() > 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if got := counterValue(t, r2.metrics.originBlobs); got != tc.wantHere {
				t.Errorf("the r2 node fetched %v blobs from the origin itself, want %v", got, tc.wantHere)
			}
			if got := counterValue(t, r2.metrics.originDelegated); got != tc.wantAskedR1 {
				t.Errorf("the r2 node asked another node %v times, want %v", got, tc.wantAskedR1)
			}
		})
	}
}
