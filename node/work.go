package node

import (
	"context"
	"errors"
	"sync"
)

// errShuttingDown refuses work asked for once the node began to close.
var errShuttingDown = errors.New("node: shutting down")

// workers owns the goroutines that requests start and that outlive them:
// blob fetches, DHT announcements, replica copies. It is raft's goFunc
// with its shutdownCh: Go refuses once Close began (a WaitGroup must not
// grow while Wait runs), and Close waits for every goroutine it accepted.
// Those goroutines run under Context, which Close ends first.
type workers struct {
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// newWorkers returns the owner of work that runs under ctx; Close ends ctx
// with cancel.
func newWorkers(ctx context.Context, cancel context.CancelFunc) *workers {
	return &workers{ctx: ctx, cancel: cancel}
}

// Context ends when Close begins; work started through Go runs under it.
func (w *workers) Context() context.Context { return w.ctx }

// Go runs fn on a goroutine of its own and reports true, or reports false
// and does nothing once Close began: the caller then undoes what fn would
// have finished.
func (w *workers) Go(fn func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		fn()
	}()
	return true
}

// Close refuses new work, ends Context, and waits for the work accepted
// before. Calling it again only waits.
func (w *workers) Close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
}
