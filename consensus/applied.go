package consensus

// AppliedIndex is the index of the last write (command entry) applied to
// the local state, 0 if none or if it cannot be read. A follower that
// forwarded a write waits until its AppliedIndex reaches the leader's
// AppliedIndex after that write, so that its clients read their own writes.
//
// Raft's own applied index is not used for this: it counts configuration
// entries too, and moves when entries are handed to the FSM, before they
// are applied.
func (s *Store) AppliedIndex() uint64 {
	i, err := s.fsm.appliedIndex()
	if err != nil {
		return 0
	}
	return i
}
