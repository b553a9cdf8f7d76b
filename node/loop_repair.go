package node

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// repairer keeps --replicas copies of the blobs this node holds: every
// interval it runs a sweep (replicate.Replicator.Sweep), which counts the
// live copies of each blob, and for a blob with too few, the lowest-id
// holder asks other nodes to copy it. A node that left for good thus has
// its blobs re-replicated by the survivors.
type repairer struct {
	every time.Duration
	// sweep checks every local blob once; it returns how many are still
	// under-replicated and how many it copied.
	sweep func(ctx context.Context) (under, repaired int, err error)
	// under is the gauge of the last sweep (status and metrics read it).
	under *atomic.Int64
	log   *slog.Logger
}

func newRepairer(every time.Duration, sweep func(context.Context) (int, int, error), under *atomic.Int64, log *slog.Logger) *repairer {
	return &repairer{every: every, sweep: sweep, under: under, log: log}
}

// Run sweeps every interval, the first one interval after the start.
func (r *repairer) Run(ctx context.Context) error {
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
