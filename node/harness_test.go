package node

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/node/gc"
	"github.com/meshreg/meshreg/node/nodefake"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// A fakeNet builds nodes over the in-memory parts of package nodefake (a
// network, a metadata cluster, a provider book) and a real blob store in a
// temporary directory, or one in memory (inMemory): fast, no sockets, with
// every node's protocols wired as in production (New registers them).
type fakeNet struct {
	t    *testing.T
	net  *nodefake.Network
	meta *nodefake.Cluster
	book *nodefake.ProviderBook
	// inMemory gives the nodes added from then on an in-memory blob store
	// (nodefake.Blobs, kept in mem) instead of one on disk.
	inMemory bool
	mem      map[*Node]*nodefake.Blobs
	// nodes are in the order added; the first leads the metadata.
	nodes []*Node
}

func newFakeNet(t *testing.T) *fakeNet {
	return &fakeNet{t: t, net: nodefake.NewNetwork(), meta: nodefake.NewCluster(), book: nodefake.NewProviderBook(),
		mem: map[*Node]*nodefake.Blobs{}}
}

// add starts a node in zone (region "r1" unless tweak changes it), with
// --replicas 1 and a peer idle timeout of 300 ms, connected to every node
// added before it.
func (fn *fakeNet) add(zone string, tweak func(*Config), opts ...Option) *Node {
	t := fn.t
	t.Helper()
	tr, err := fn.net.NewTransport()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Region, cfg.Zone = "r1", zone
	cfg.Replicas = 1
	cfg.PeerIdleTimeout = 300 * time.Millisecond
	cfg.MinFreeDisk = 0
	cfg.ScrubRate = 0
	if tweak != nil {
		tweak(&cfg)
	}
	log := tlog.Logger(t, slog.LevelDebug).With("node", len(fn.nodes))
	var blobs BlobStore
	var files gc.Files // lets eviction (--max-disk) delete files; the fake metadata has no GC
	mem := nodefake.NewBlobs()
	if fn.inMemory {
		blobs = memBlobs(mem)
	} else {
		store, err := blobstore.Open(cfg.DataDir, log)
		if err != nil {
			t.Fatal(err)
		}
		blobs, files = diskBlobs{store}, store
	}
	meta := fn.meta.Join(tr.ID().String(), tr.RaftAddress())
	n := New(cfg, Parts{Blobs: blobs, Meta: meta, Transport: tr, Providers: fn.book.Routing(tr.ID()), Files: files}, log, opts...)
	if fn.inMemory {
		fn.mem[n] = mem
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("closing node: %v", err)
		}
	})
	for _, o := range fn.nodes {
		if err := tr.Dial(t.Context(), o.host.ID()); err != nil {
			t.Fatal(err)
		}
	}
	fn.nodes = append(fn.nodes, n)
	return n
}

// randomBlob returns size reproducible random bytes and their digest.
func randomBlob(seed uint64, size int) ([]byte, digest.Digest) {
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b, digest.FromBytes(b)
}

// hold stores blob on n's disk and links it in repo, as a push through n
// does, without announcing it in the DHT.
func hold(t *testing.T, n *Node, repo string, blob []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(blob)
	if _, err := n.blobs.Put(d, bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	if err := n.meta.LinkBlob(t.Context(), repo, d, int64(len(blob))); err != nil {
		t.Fatal(err)
	}
	return d
}

// pull reads blob d of repo through n as a client does.
func pull(ctx context.Context, n *Node, repo string, d digest.Digest) ([]byte, error) {
	r, _, err := n.OpenBlob(ctx, repo, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// penalised reports whether n's status shows p as penalised.
func penalised(n *Node, p string) bool {
	for _, ps := range n.Status(context.Background()).(Status).Peers {
		if ps.ID == p && ps.PenalisedUntil != nil {
			return true
		}
	}
	return false
}
