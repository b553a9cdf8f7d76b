package replicate

import (
	"context"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// Sweep checks every local blob once; it returns how many are still
// under-replicated and how many it copied. For a blob with fewer than
// min(Replicas, live nodes) live copies, the lowest-id holder asks other
// nodes to copy it; the other holders only count it. A node that left for
// good thus has its blobs re-replicated by the survivors.
func (r *Replicator) Sweep(ctx context.Context) (under, repaired int, err error) {
	self := r.cfg.Net.ID()
	var batch []Ref
	sweep := func() {
		live := r.cfg.Cluster.Live()
		target := r.target(live)
		digests := make([]digest.Digest, len(batch))
		for i, ref := range batch {
			digests[i] = ref.Digest
		}
		var has map[digest.Digest][]peer.ID
		if target > 1 {
			has = r.Holders(ctx, live, digests)
		}
		for _, ref := range batch {
			// The local copy counts only once verified (hashed now if it
			// was not since the start): a corrupt one is quarantined by
			// Verify and fetched again, not counted.
			if r.cfg.Blobs.Verify(ctx, ref.Digest, false, nil) != nil {
				continue
			}
			held := append([]peer.ID{self}, has[ref.Digest]...)
			if len(held) >= target {
				continue
			}
			// One holder repairs, the others leave it: the lowest id.
			if slices.Min(held) != self {
				under++
				continue
			}
			if err := r.copyBlob(ctx, ref, held, live, target); err != nil {
				r.cfg.Log.Warn("re-replicating a blob failed", "digest", ref.Digest, "err", err)
				under++
				continue
			}
			repaired++
		}
		batch = batch[:0]
	}
	err = r.cfg.Blobs.Walk(func(d digest.Digest, size int64) bool {
		batch = append(batch, Ref{Digest: d, Size: size})
		if len(batch) == hasBatch {
			sweep()
		}
		return ctx.Err() == nil
	})
	if len(batch) > 0 && ctx.Err() == nil {
		sweep()
	}
	return under, repaired, err
}
