package consensus

import (
	"context"
	"sync"
)

// hub fans values out to subscribers without ever blocking the publisher
// (raft's FSM goroutine, or the store's watch goroutine).
//
// Each subscriber has a channel with a bounded buffer. When it is full, the
// oldest value in it is dropped to make room for the newest: a slow
// subscriber may miss intermediate values but always receives the latest.
// A subscription ends, and its channel is closed, when its context ends or
// the hub closes (the store closes).
type hub[T any] struct {
	size int // buffer of each subscriber's channel, at least 1

	mu     sync.Mutex
	last   T
	subs   map[chan T]func() bool // channel → stop of its context.AfterFunc
	closed bool
}

func newHub[T any](size int, initial T) *hub[T] {
	return &hub[T]{size: max(size, 1), last: initial, subs: map[chan T]func() bool{}}
}

// subscribe returns the latest value published and a channel of the values
// published after it.
func (h *hub[T]) subscribe(ctx context.Context) (T, <-chan T) {
	ch := make(chan T, h.size)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		close(ch)
		return h.last, ch
	}
	// AfterFunc starts no goroutine until ctx ends.
	h.subs[ch] = context.AfterFunc(ctx, func() { h.unsubscribe(ch) })
	return h.last, ch
}

func (h *hub[T]) unsubscribe(ch chan T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// publish records v as the latest value and hands it to every subscriber.
// It never blocks: a full channel loses its oldest value. Only publish
// sends, under mu, so after one receive from a full channel the send below
// finds room.
func (h *hub[T]) publish(v T) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.last = v
	for ch := range h.subs {
		select {
		case ch <- v:
			continue
		default:
		}
		select {
		case <-ch:
		default:
		}
		select {
		case ch <- v:
		default:
		}
	}
}

// latest returns the value published last.
func (h *hub[T]) latest() T {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// close ends every subscription; later ones get a closed channel at once.
func (h *hub[T]) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch, stop := range h.subs {
		stop()
		delete(h.subs, ch)
		close(ch)
	}
}
