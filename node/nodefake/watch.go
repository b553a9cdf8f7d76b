package nodefake

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/meshreg/meshreg/consensus"
)

// watchers are the subscriptions to one member's view of the cluster
// (Meta.Watch). As consensus.Store.Watch, publishing never blocks: a full
// channel loses its oldest view for the newest.
type watchers struct {
	mu   sync.Mutex
	subs map[chan consensus.State]struct{}
}

func (w *watchers) subscribe(ctx context.Context) <-chan consensus.State {
	ch := make(chan consensus.State, 4)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.subs == nil {
		w.subs = map[chan consensus.State]struct{}{}
	}
	w.subs[ch] = struct{}{}
	context.AfterFunc(ctx, func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.subs[ch]; ok {
			delete(w.subs, ch)
			close(ch)
		}
	})
	return ch
}

// close ends every subscription (the member closed), as the store does.
func (w *watchers) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
		delete(w.subs, ch)
		close(ch)
	}
}

func (w *watchers) publish(v consensus.State) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.subs {
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

// viewLocked is m's view of the cluster; callers hold m.c.mu.
func (m *Meta) viewLocked() consensus.State {
	c := m.c
	v := consensus.State{Role: consensus.Follower, LeaderID: c.leader, Term: 1, MembershipIndex: c.configIndex}
	for _, mb := range c.members {
		if mb.ID == c.leader {
			v.LeaderAddress = mb.Address
		}
	}
	if c.leader == m.id {
		v.Role = consensus.Leader
	}
	if m.isClosed() {
		v.Role = consensus.Shutdown
	}
	return v
}

// changedLocked tells every member's watchers that the leader or the
// membership changed; callers hold c.mu.
func (c *Cluster) changedLocked(membership bool) {
	if membership {
		c.configIndex++
	}
	for _, m := range c.metas {
		m.watch.publish(m.viewLocked())
	}
}

// Watch returns this member's view of the cluster and a channel of its
// views after each change of leader or membership, until ctx ends.
func (m *Meta) Watch(ctx context.Context) (consensus.State, <-chan consensus.State) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return m.viewLocked(), m.watch.subscribe(ctx)
}

// WaitApplied waits until this member applied the log up to index (its
// lag passed for that entry).
func (m *Meta) WaitApplied(ctx context.Context, index uint64) error {
	for {
		m.c.mu.Lock()
		m.catchUp(false)
		m.mu.Lock()
		applied, lag, closed := m.applied, m.lag, m.closed
		m.mu.Unlock()
		var due time.Time
		if applied < len(m.c.log) {
			due = m.c.log[applied].at.Add(lag)
		}
		m.c.mu.Unlock()
		if uint64(applied) >= index {
			return nil
		}
		if closed {
			return consensus.ErrClosed
		}
		// An index not written yet is retried soon: the fake has no commit
		// notification of its own.
		wait := max(time.Until(due), time.Millisecond)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// ReadIndex, on the leader, applies every write committed (as a new
// leader's barrier makes it) and returns the applied index; elsewhere it
// fails with consensus.ErrNotLeader.
func (m *Meta) ReadIndex(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	if m.c.leader != m.id || m.isClosed() {
		return 0, fmt.Errorf("nodefake: read index on %s: %w", m.id, consensus.ErrNotLeader)
	}
	m.catchUp(true)
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(m.applied), nil
}
