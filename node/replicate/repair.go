package replicate

import (
	"context"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

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

// Repairer keeps Replicas copies of the blobs this node holds: every
// interval it runs a sweep (Replicator.Sweep), which counts the live
// copies of each blob, and for a blob with too few, the lowest-id holder
// asks other nodes to copy it. A node that left for good thus has its
// blobs re-replicated by the survivors.
type Repairer struct {
	every time.Duration
	// sweep checks every local blob once; it returns how many are still
	// under-replicated and how many it copied.
	sweep func(ctx context.Context) (under, repaired int, err error)
	// under is the gauge of the last sweep (status and metrics read it).
	under *atomic.Int64
	log   *slog.Logger
}

// NewRepairer returns the loop that calls sweep every interval and stores
// its under-replicated count in under.
func NewRepairer(every time.Duration, sweep func(context.Context) (int, int, error), under *atomic.Int64, log *slog.Logger) *Repairer {
	return &Repairer{every: every, sweep: sweep, under: under, log: log}
}

// Run sweeps every interval, the first one interval after the start,
// until ctx ends; it then returns nil.
func (r *Repairer) Run(ctx context.Context) error {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		under, repaired, err := r.sweep(ctx)
		r.under.Store(int64(under))
		if err != nil && ctx.Err() == nil {
			r.log.Warn("replica repair sweep failed", "err", err)
		}
		if repaired > 0 || under > 0 {
			r.log.Info("replica repair sweep", "copied", repaired, "still_under_replicated", under)
		}
	}
}
