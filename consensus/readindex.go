package consensus

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
)

// ReadIndex returns, on the leader, an index that covers every write
// acknowledged before the call, by any node: a node that has applied the
// log up to it (WaitApplied) reads all of them, so a read that misses
// after that may answer "not found" (a linearizable read; hashicorp/raft
// has no ReadIndex of its own).
//
// The leader confirms its leadership with a quorum first, so that a leader
// deposed without noticing fails instead of answering from a state that
// lacks what its successor committed. A new leader first commits an entry
// of its own term (a Barrier, once per term): until then it may not have
// applied what its predecessor acknowledged. Elsewhere, and when the
// leadership is lost meanwhile, it fails with ErrNotLeader. It blocks at
// most until ctx ends. Safe for concurrent use.
func (s *Store) ReadIndex(ctx context.Context) (uint64, error) {
	if s.raft.State() != raft.Leader {
		return 0, fmt.Errorf("consensus: read index: this node does not lead: %w", ErrNotLeader)
	}
	term := s.raft.CurrentTerm()
	if s.readTerm.Load() != term {
		if err := s.Barrier(ctx); err != nil {
			return 0, fmt.Errorf("consensus: read index: committing an entry of term %d: %w", term, err)
		}
		// Were the leadership lost and won again meanwhile, term is older
		// than the current one and the next call barriers again.
		s.readTerm.Store(term)
	} else {
		f := s.raft.VerifyLeader()
		if err := wait(ctx, func() error { return raftError(f.Error()) }); err != nil {
			return 0, fmt.Errorf("consensus: read index: confirming the leadership: %w", err)
		}
	}
	return s.AppliedIndex(), nil
}
