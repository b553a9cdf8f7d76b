package consensus

import (
	"github.com/hashicorp/raft"
)

// A follower learns that an entry is committed only from the leader's next
// AppendEntries: with new entries, or when idle after CommitTimeout (250–500
// ms). A write forwarded by a follower returns once the follower applied
// it, so it waited for that: ~18 ms where the leader's own write took ~1
// ms. hashicorp/raft has no way to send the commit index at once (its
// heartbeats do not carry it, and nothing outside raft may trigger
// replication), but appending an entry does: so, after a write it
// commits, the leader appends a barrier entry, whose AppendEntries carries
// the new commit index to every follower at once. Writes that commit while
// a barrier is in flight share the next one, so there is at most one
// barrier in flight and one pending; and none is needed when an entry was
// appended after the write committed (its AppendEntries carries the
// commit index), which busy leaders often see. Every write is notified, the
// leader's own too: a follower waits for a forwarded write before it
// answers its client, and the followers of the metadata (tail.go) hear of
// any commit from a member, which knows of it only from the leader's next
// AppendEntries (a tag pushed to the leader reached them in 76-81 ms, p50,
// without this; 2 ms with it). The price is a barrier entry per batch of
// writes in the members' logs.

// notifyCommits asks notifyLoop to tell the followers that a write
// committed (before the call); it never blocks.
func (s *Store) notifyCommits() {
	last := s.raft.LastIndex()
	s.pending.Lock()
	s.pending.last = max(s.pending.last, last)
	s.pending.Unlock()
	select {
	case s.notify <- struct{}{}:
	default: // one is pending already; it covers this commit too
	}
}

// notifyLoop appends a barrier entry for each batch of commits, while this
// node leads a cluster of more than itself. It returns when the store
// closes.
func (s *Store) notifyLoop() {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-s.notify:
		}
		if s.cfg.quietCommits || s.raft.State() != raft.Leader || s.alone() {
			continue
		}
		s.pending.Lock()
		last := s.pending.last
		s.pending.Unlock()
		if s.raft.LastIndex() > last {
			// An entry was appended after the commit was known: its
			// AppendEntries carries the commit index already.
			continue
		}
		f := s.raft.Barrier(s.cfg.ApplyTimeout)
		done := make(chan struct{})
		go func() { // resolved by raft at the latest when it shuts down
			defer close(done)
			_ = f.Error()
		}()
		select {
		case <-s.stop:
			return
		case <-done:
		}
	}
}
