package node

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"
)

// loop is one of the node's background loops. Run works until ctx ends and
// then returns nil; an error means the node cannot go on (its storage
// failed) and stops every other loop (see runLoops).
type loop interface {
	Run(ctx context.Context) error
}

// runLoops runs loops in one errgroup until ctx ends or one of them fails.
// The first failure cancels the others; runLoops returns it once all have
// returned, so nothing of the node runs in the background after it.
func runLoops(ctx context.Context, loops ...loop) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, l := range loops {
		g.Go(func() error { return l.Run(ctx) })
	}
	return g.Wait()
}

// storageWatch is the loop that stops the node when its metadata store
// fails: the store reports the failure once on failed (its OnFatal), and
// every loop then stops with the error (see serve, which exits).
type storageWatch struct {
	failed <-chan error // nil for a node made with New: never fails here
}

func (w storageWatch) Run(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-w.failed:
		return fmt.Errorf("node: stopping: %w", err)
	}
}
