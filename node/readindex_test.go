package node

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestReadIndexesCoalesce: a burst of misses shares the leader queries
// (the one in flight when they arrive is not theirs: they share the next),
// and past maxCatchUpWaiters a read is refused at once instead of queued.
func TestReadIndexesCoalesce(t *testing.T) {
	t.Parallel()
	var queries atomic.Int64
	release := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	w := newWorkers(ctx, cancel)
	defer w.Close()
	r := &readIndexes{work: w, query: func(ctx context.Context) (uint64, error) {
		n := queries.Add(1)
		if n == 1 {
			<-release // the first query is in flight while the burst arrives
		}
		return uint64(n), nil
	}}

	first := make(chan uint64, 1)
	go func() { i, _ := r.get(t.Context()); first <- i }()
	for queries.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	const burst = 200
	var wg sync.WaitGroup
	got := make([]uint64, burst)
	for i := range burst {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], _ = r.get(t.Context()) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		waiting := r.waiting
		r.mu.Unlock()
		if waiting == burst+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reads waiting, want %d", waiting, burst+1)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()
	if i := <-first; i != 1 {
		t.Errorf("the first read got index %d, want the first query's", i)
	}
	for i, idx := range got {
		if idx != 2 {
			t.Fatalf("read %d of the burst got the answer of query %d; want query 2 (started after it arrived)", i, idx)
		}
	}
	if n := queries.Load(); n != 2 {
		t.Errorf("%d queries for %d reads, want 2", n, burst+1)
	}

	// Past the bound, refused at once.
	r.mu.Lock()
	r.waiting = maxCatchUpWaiters
	r.mu.Unlock()
	if _, err := r.get(t.Context()); !errors.Is(err, errTooManyWaiters) {
		t.Errorf("a read past %d waiters: %v, want errTooManyWaiters", maxCatchUpWaiters, err)
	}
}
