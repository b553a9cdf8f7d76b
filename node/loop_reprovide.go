package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// provideRate bounds announcements per second in a sweep.
const provideRate = 200

// blobLister lists the blobs held on this node's disk.
type blobLister interface {
	Walk(fn func(d digest.Digest, size int64) bool) error
}

// routingTable tells whether the DHT knows any peer to announce to.
type routingTable interface {
	RoutingTableSize() int
}

// reprovider announces every local blob in the DHT: once the routing
// table has peers after start, then every interval. Blobs committed in
// between are announced at commit; the sweep renews records before they
// expire (48 h) and covers announcements that failed. It is rate-limited
// so that 100,000 blobs do not flood the cluster.
type reprovider struct {
	blobs   blobLister
	routing routingTable
	// provide announces one blob (Node.provide); failures are its to log.
	provide func(d digest.Digest)
	every   time.Duration
	log     *slog.Logger
}

func newReprovider(blobs blobLister, routing routingTable, provide func(digest.Digest), every time.Duration, log *slog.Logger) *reprovider {
	return &reprovider{blobs: blobs, routing: routing, provide: provide, every: every, log: log}
}

func (r *reprovider) Run(ctx context.Context) error {
	for r.routing.RoutingTableSize() == 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	for {
		r.sweep(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.every):
		}
	}
}

// sweep announces every blob held now once, at most provideRate a second
// and 8 at a time.
func (r *reprovider) sweep(ctx context.Context) {
	start := time.Now()
	count := 0
	limiter := time.NewTicker(time.Second / provideRate)
	defer limiter.Stop()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	_ = r.blobs.Walk(func(d digest.Digest, _ int64) bool {
		select {
		case <-gctx.Done():
			return false
		case <-limiter.C:
		}
		count++
		g.Go(func() error { r.provide(d); return nil })
		return true
	})
	_ = g.Wait()
	if count > 0 {
		r.log.Info("announced the blobs held in the DHT", "count", count, "took", time.Since(start).Round(time.Millisecond))
	}
}
