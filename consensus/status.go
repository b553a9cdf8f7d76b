package consensus

import (
	"time"
)

// Status is a node's view of the Raft cluster.
type Status struct {
	// State is Follower, Candidate, Leader or Shutdown.
	State         Role   `json:"state"`
	LeaderID      string `json:"leader_id"`
	LeaderAddress string `json:"leader_address"`
	Term          uint64 `json:"term"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	LastIndex     uint64 `json:"last_index"`
	// LastContact is when a follower last heard from the leader (zero on the
	// leader itself).
	LastContact time.Time `json:"last_contact,omitzero"`
	Members     []Member  `json:"members"`
	// StorageError is the failure that stopped the FSM (see
	// ErrStorageFailed), "" while it works.
	StorageError string `json:"storage_error,omitempty"`
	// Following is whether this node follows the metadata without being a
	// Raft member (follow.go); Tail is that tail's status then.
	Following bool       `json:"following,omitempty"`
	Tail      TailStatus `json:"tail,omitzero"`
}

// Member is a server in the Raft configuration.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	// Suffrage is Voter, Nonvoter or Staging.
	Suffrage Suffrage `json:"suffrage"`
}

// Status reports the node's Raft state. It does not block on Raft's main
// loop and works after Close (State is then Shutdown).
func (s *Store) Status() Status {
	addr, id := s.raft.LeaderWithID()
	st := Status{
		State:         roleOf(s.raft.State()),
		LeaderID:      string(id),
		LeaderAddress: string(addr),
		Term:          s.raft.CurrentTerm(),
		CommitIndex:   s.raft.CommitIndex(),
		AppliedIndex:  s.raft.AppliedIndex(),
		LastIndex:     s.raft.LastIndex(),
		LastContact:   s.raft.LastContact(),
		Members:       []Member{},
	}
	if members, err := s.Members(); err == nil {
		st.Members = members
	}
	if err := s.fsm.failure(); err != nil {
		st.StorageError = err.Error()
	}
	return st
}

// Ready reports whether the store is open, its FSM works and Raft has a
// leader, i.e. whether writes can be committed and applied.
func (s *Store) Ready() bool {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	_, id := s.raft.LeaderWithID()
	return !closed && id != "" && s.fsm.failure() == nil
}
