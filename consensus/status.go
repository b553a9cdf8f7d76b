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
//
// While the store follows the metadata (follow.go), the leader and term
// are the tail's when raft knows none, Members the configuration learned
// through the tail, and Tail the tail's status.
func (s *Store) Status() Status {
	l := s.leader()
	st := Status{
		State:         roleOf(s.raft.State()),
		LeaderID:      l.ID,
		LeaderAddress: l.Address,
		Term:          l.Term,
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
	if s.Following() {
		st.Following, st.Tail = true, s.TailStatus()
	}
	return st
}

// Ready reports whether the store is open, its FSM works and Raft has a
// leader, i.e. whether writes can be committed and applied.
func (s *Store) Ready() bool {
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	return !closed && s.leader().ID != "" && s.fsm.failure() == nil
}

// leader is the leader this node knows and the term: raft's or, while
// the store follows the metadata and raft knows none, the tail's.
func (s *Store) leader() tailLeader {
	addr, id := s.raft.LeaderWithID()
	if id == "" {
		if l, ok := s.tailLeader(); ok {
			return l
		}
	}
	return tailLeader{ID: string(id), Address: string(addr), Term: s.raft.CurrentTerm()}
}
