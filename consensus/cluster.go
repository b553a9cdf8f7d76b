package consensus

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/meshreg/meshreg/consensus/state"
)

// This file holds what a multi-node cluster needs beyond the single node:
// membership changes, forwarding writes from followers to the leader, and
// barriers. The transport is the caller's (Config.Transport); so is the
// forwarding RPC (Config.Forwarder).

// Server is a Raft server: its id and the address its transport reaches it
// at.
type Server struct {
	ID      string
	Address string
}

// Forwarder carries a write from a follower to the leader. The caller
// implements it over its own RPC; the leader's side of that RPC calls
// ApplyForwarded with the bytes and sends back the result.
//
// Contract for the error Forward returns:
//   - nil: the leader committed and applied the write;
//   - the leader's error, rebuilt from ErrorCode on the leader and
//     &ForwardError{Code, Msg} here, so that errors.Is finds the same
//     sentinel (ErrNotFound, ErrNotLeader, ...) as on the leader;
//   - ctx's error if ctx ended (the write may still be applied);
//   - any other error means the leader could not be reached; the write is
//     reported as ErrNotLeader (it may still have been applied).
//
// Forward is called concurrently, once per write in flight.
type Forwarder interface {
	Forward(ctx context.Context, leader Server, cmd []byte) error
}

// Error codes a forwarded write's result travels as (see ErrorCode).
const (
	CodeNotFound  = "not_found"
	CodeNotLeader = "not_leader"
	CodeInvalid   = "invalid_command"
	CodeCanceled  = "canceled"
	CodeDeadline  = "deadline_exceeded"
	CodeInternal  = "internal"
	// CodeBlobCollected: ErrBlobCollected (a push raced a garbage
	// collection).
	CodeBlobCollected = "blob_collected"
	// CodePolicyDenied: ErrPolicyDenied (the content policy refused it).
	CodePolicyDenied = "policy_denied"
)

// ErrorCode is the code a forwarded write's error travels as: "" for nil,
// one of the Code constants otherwise. ErrClosed becomes CodeNotLeader: to
// the follower, a closing leader is no leader.
func ErrorCode(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotFound):
		return CodeNotFound
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrClosed):
		return CodeNotLeader
	case errors.Is(err, ErrInvalidCommand):
		return CodeInvalid
	case errors.Is(err, ErrBlobCollected):
		return CodeBlobCollected
	case errors.Is(err, ErrPolicyDenied):
		return CodePolicyDenied
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadline
	}
	return CodeInternal
}

// ForwardError is a forwarded write's error as the follower rebuilds it from
// the leader's ErrorCode and message. errors.Is matches the sentinel of its
// code (none for CodeInternal or an unknown code).
type ForwardError struct {
	Code string
	Msg  string
}

func (e *ForwardError) Error() string { return "leader: " + e.Msg }

func (e *ForwardError) Unwrap() error {
	switch e.Code {
	case CodeNotFound:
		return ErrNotFound
	case CodeNotLeader:
		return ErrNotLeader
	case CodeInvalid:
		return ErrInvalidCommand
	case CodeBlobCollected:
		return ErrBlobCollected
	case CodePolicyDenied:
		return ErrPolicyDenied
	case CodeCanceled:
		return context.Canceled
	case CodeDeadline:
		return context.DeadlineExceeded
	}
	return nil
}

// ApplyForwarded commits a write a follower forwarded (the leader's side of
// the Forwarder RPC): cmd must decode to a valid command, else the error
// wraps ErrInvalidCommand. The followers learn of the commit at once (see
// notifyCommits). It never forwards again: on a node that is not
// the leader it fails with ErrNotLeader, and the follower may retry. Safe for
// concurrent use.
func (s *Store) ApplyForwarded(ctx context.Context, cmd []byte) error {
	c, err := state.DecodeCommand(cmd)
	if err != nil {
		return fmt.Errorf("consensus: forwarded write: %w: %w", ErrInvalidCommand, err)
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("forwarded write: %w", err)
	}
	// The follower answers its client once it applied the write: tell it
	// of the commit at once (notify.go).
	return s.apply(ctx, cmd, true)
}

// forward sends an encoded command to the leader through the Forwarder.
func (s *Store) forward(ctx context.Context, cmd []byte) error {
	l := s.leader() // the tail's, on a metadata follower
	addr, id := raft.ServerAddress(l.Address), raft.ServerID(l.ID)
	switch {
	case id == "":
		return fmt.Errorf("consensus: no known leader: %w", ErrNotLeader)
	case string(id) == s.cfg.NodeID:
		// Raft says this node leads, but it refused the write: leadership is
		// changing.
		return fmt.Errorf("consensus: leadership changing: %w", ErrNotLeader)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.ApplyTimeout)
		defer cancel()
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var moved atomic.Bool
	go s.watchLeader(fctx, id, func() { moved.Store(true); cancel() })
	err := s.cfg.Forwarder.Forward(fctx, Server{ID: string(id), Address: string(addr)}, cmd)
	var fe *ForwardError
	switch {
	case err == nil, errors.As(err, &fe):
		return err
	case moved.Load():
		return fmt.Errorf("consensus: leader %s lost the leadership while the write was forwarded to it: %w (the write may still be applied; retry)", id, ErrNotLeader)
	case ctx.Err() != nil && errors.Is(err, ctx.Err()):
		return fmt.Errorf("consensus: forwarding to leader %s: %w (the write may still be applied)", id, err)
	}
	return fmt.Errorf("consensus: forwarding to leader %s: %w (%w)", id, ErrNotLeader, err)
}

// watchLeader calls moved once this node sees a leader other than id (or
// none) while ctx lasts. A write forwarded to a leader cut off by a
// partition would otherwise wait for its whole deadline, although the
// majority elected another leader within an election timeout.
func (s *Store) watchLeader(ctx context.Context, id raft.ServerID, moved func()) {
	st, changes := s.Watch(ctx)
	for st.LeaderID == string(id) {
		var open bool
		if st, open = <-changes; !open {
			return // ctx ended, or the store closed (the write fails with it)
		}
	}
	moved()
}

// Barrier waits until every write committed before it is applied locally,
// so that reads after it see them (read-your-writes across nodes). Only the
// leader can barrier: elsewhere it fails with ErrNotLeader (a follower would
// need the leader's commit index, which takes an RPC it does not have yet).
func (s *Store) Barrier(ctx context.Context) error {
	f := s.raft.Barrier(s.timeout(ctx))
	return wait(ctx, func() error { return raftError(f.Error()) })
}

// --- membership: leader only, else ErrNotLeader ---

// Members lists the servers of the latest configuration (possibly not yet
// committed), with their suffrage. While the store follows the metadata,
// it is the configuration learned through the tail, once there is one.
func (s *Store) Members() ([]Member, error) {
	if ms := s.TailConfiguration(); ms != nil {
		return ms, nil
	}
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, raftError(err)
	}
	members := []Member{}
	for _, srv := range f.Configuration().Servers {
		members = append(members, Member{ID: string(srv.ID), Address: string(srv.Address), Suffrage: suffrageOf(srv.Suffrage)})
	}
	return members, nil
}

// member returns the server id in the latest configuration, ok false if it
// is not a member.
func (s *Store) member(id string) (srv raft.Server, ok bool, err error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return srv, false, raftError(err)
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			return srv, true, nil
		}
	}
	return srv, false, nil
}

// AddNonvoter adds the server as a non-voter: it receives the log but does
// not vote. A no-op if id is already a member (voter or not) at addr; a
// member at another address gets the new one, keeping its suffrage.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	if srv, ok, err := s.member(id); err != nil || (ok && string(srv.Address) == addr) {
		return s.leaderOnly(err)
	}
	return s.change(ctx, func(timeout time.Duration) raft.IndexFuture {
		return s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// AddVoter adds the server as a voter, or makes a member one. A no-op if
// id is already a voter at addr.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	if srv, ok, err := s.member(id); err != nil || (ok && string(srv.Address) == addr && srv.Suffrage == raft.Voter) {
		return s.leaderOnly(err)
	}
	return s.change(ctx, func(timeout time.Duration) raft.IndexFuture {
		return s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// Promote makes a member a voter (a no-op if it is one); ErrNotFound if id
// is not a member.
func (s *Store) Promote(ctx context.Context, id string) error {
	srv, ok, err := s.member(id)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("consensus: server %s is not a member: %w", id, ErrNotFound)
	}
	return s.AddVoter(ctx, id, string(srv.Address))
}

// RemoveServer removes the server from the cluster (a no-op if it is not a
// member). Removing the leader itself makes the others elect a new one.
// Removing a voter shrinks the quorum; the caller keeps enough live voters.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if _, ok, err := s.member(id); err != nil || !ok {
		return s.leaderOnly(err)
	}
	return s.change(ctx, func(timeout time.Duration) raft.IndexFuture {
		return s.raft.RemoveServer(raft.ServerID(id), 0, timeout)
	})
}

// TransferLeadership hands leadership to the most up-to-date voter and
// returns once that is done (or failed); used before a leader stops.
func (s *Store) TransferLeadership(ctx context.Context) error {
	if err := s.leaderOnly(nil); err != nil {
		return err
	}
	f := s.raft.LeadershipTransfer()
	return wait(ctx, func() error { return raftError(f.Error()) })
}

// leaderOnly returns err, or ErrNotLeader if this node does not lead.
func (s *Store) leaderOnly(err error) error {
	if err == nil && s.raft.State() != raft.Leader {
		return fmt.Errorf("consensus: membership changes need the leader: %w", ErrNotLeader)
	}
	return err
}

// change runs a configuration change and waits until it is committed.
func (s *Store) change(ctx context.Context, start func(timeout time.Duration) raft.IndexFuture) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f := start(s.timeout(ctx))
	return wait(ctx, func() error { return raftError(f.Error()) })
}

// timeout is how long raft may take to enqueue a request: ApplyTimeout,
// shortened to ctx's deadline.
func (s *Store) timeout(ctx context.Context) time.Duration {
	timeout := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	return timeout
}
