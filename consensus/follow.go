package consensus

import (
	"context"
	"errors"
	"io"
	"time"
)

// A metadata follower is a node that is not in the Raft configuration but
// keeps the same state: it tails the committed log of one member over a
// stream (tail.go serves it, tailwire.go frames it), applies each command
// entry with the FSM's Apply and restores the member's snapshot when it is
// too far behind. Its reads are local; its writes are forwarded to the
// leader the tail names, through Config.Forwarder, as a Raft follower's
// are. The leader's cost then depends on the members only.

// TailDialer opens a tail stream to a member (the node implements it over
// libp2p). The stream is closed by the follower.
type TailDialer interface {
	DialTail(ctx context.Context, member Server) (io.ReadWriteCloser, error)
}

// TailStatus is what a follower knows of its tail.
type TailStatus struct {
	// Source is the id of the member tailed from ("" between streams).
	Source string `json:"source,omitempty"`
	// Applied is the last Raft index received and applied through the
	// tail (command or not).
	Applied uint64 `json:"applied"`
	// LeaderID, LeaderAddress and Term are the leader as the source last
	// named it ("" while it knows none).
	LeaderID      string `json:"leader_id,omitempty"`
	LeaderAddress string `json:"leader_address,omitempty"`
	Term          uint64 `json:"term,omitempty"`
	// LastMessage is when the source last sent anything.
	LastMessage time.Time `json:"last_message,omitzero"`
	// Reconnects counts streams that ended with an error; Snapshots the
	// snapshots restored from sources.
	Reconnects uint64 `json:"reconnects"`
	Snapshots  uint64 `json:"snapshots"`
}

// ErrMember: Follow was called on a node that is in its own Raft
// configuration (a member never follows).
var ErrMember = errors.New("this node is a raft member")

// errNotImplemented marks the API before its implementation (one commit).
var errNotImplemented = errors.New("consensus: not implemented yet")

// Follow starts following: tails from one of members (or, when members is
// empty, from the configuration learned and persisted earlier),
// reconnecting to another member on error with bounded backoff, until
// StopFollowing or Close. Errors if raft on this node is a member of its
// own configuration (a member never follows: ErrMember), if there is no
// member to tail from, or if the store has no Config.TailDialer.
func (s *Store) Follow(members []Server) error { return errNotImplemented }

// StopFollowing stops the tail and waits until no entry is being applied
// (before this node becomes a Raft member: raft's FSM goroutine and the
// tail must never apply at the same time). A no-op when not following.
func (s *Store) StopFollowing() {}

// Following reports whether the store follows the metadata (not a member).
func (s *Store) Following() bool { return false }

// FollowedBefore reports whether a configuration learned through a tail
// is stored and this node is not a member of its own Raft configuration:
// a restarted follower then calls Follow(nil).
func (s *Store) FollowedBefore() bool { return false }

// TailStatus reports the tail: source member id, last index applied,
// leader known, last message time, reconnects, snapshots restored.
func (s *Store) TailStatus() TailStatus { return TailStatus{} }

// TailConfiguration returns the members as learned through the tail (nil
// when not following or never learned).
func (s *Store) TailConfiguration() []Member { return nil }
