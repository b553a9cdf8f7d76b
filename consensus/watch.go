package consensus

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/meshreg/meshreg/consensus/state"
)

// Events. The store publishes two streams, each as the current value plus a
// channel of the values after it (as raft's Observer and LeaderCh, spegel's
// store.Watcher), so that nothing above it polls Raft:
//
//   - Watch: this node's role, the leader, the term and the index of the
//     latest membership configuration, whenever one of them changes;
//   - WatchApplied: every command entry the FSM applied, with its Raft
//     index and kind, and every snapshot it restored (KindRestore). This is
//     the stream metadata followers are to be fed from.
//
// Semantics, for both: publishing never blocks Raft. Each subscriber has a
// bounded buffer; when it is full the oldest event is dropped for the
// newest. A subscriber may miss intermediate events but always sees the
// latest. Applied events carry their index, so a subscriber that must see
// every change notices a gap (an index above the one it expected) and
// reads the state instead. A channel is closed when the subscription's
// context ends or the store closes.

// State is this node's view of the cluster as Watch publishes it.
type State struct {
	Role          Role
	LeaderID      string // "" while there is no known leader
	LeaderAddress string
	Term          uint64
	// MembershipIndex moves whenever a membership change (a member added,
	// promoted or removed) is committed: it is the Raft index of the latest
	// configuration this node applied, or after a snapshot restore the
	// index the restored state is at. Members may show a change a moment
	// before (raft uses a configuration as soon as it is in the log).
	MembershipIndex uint64
}

// CommandKind names what an applied entry did (see state.Kind).
type CommandKind = state.Kind

const (
	KindPutManifest    = state.KindPutManifest
	KindDeleteManifest = state.KindDeleteManifest
	KindDeleteTag      = state.KindDeleteTag
	KindLinkBlob       = state.KindLinkBlob
	KindUnlinkBlob     = state.KindUnlinkBlob
	KindPutSetting     = state.KindPutSetting
	KindGCSweep        = state.KindGCSweep
	KindRestore        = state.KindRestore
	KindInvalid        = state.KindInvalid
)

// Applied is one entry the FSM applied: its Raft index, kind and what it
// named. The value a subscription starts from has only Index set (the last
// entry applied before it).
type Applied = state.Applied

// Buffers of each subscriber's channel (see the semantics above).
const (
	watchBuffer   = 4
	appliedBuffer = 256
)

// Watch returns this node's current view of the cluster and a channel that
// receives the view after each change, until ctx ends or the store closes.
// It never blocks Raft (see the semantics above).
//
// The current view is read from raft under the same lock the publisher
// holds, so it is never older than what the channel delivers after it.
func (s *Store) Watch(ctx context.Context) (State, <-chan State) {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	s.refreshLocked()
	return s.cluster.subscribe(ctx)
}

// WatchApplied returns the last entry applied and a channel that receives
// each entry applied after it, until ctx ends or the store closes. It never
// blocks Raft (see the semantics above).
func (s *Store) WatchApplied(ctx context.Context) (Applied, <-chan Applied) {
	return s.applied.subscribe(ctx)
}

// watchLoop publishes the cluster view whenever raft reports a change of
// leader or state, or the FSM a configuration or a restore (kick). It
// reads the whole view from raft each time, so an observation raft
// dropped (its observer never blocks either) costs nothing but that one
// wake-up.
func (s *Store) watchLoop(obs <-chan raft.Observation, kick <-chan struct{}) {
	defer s.wg.Done()
	for {
		select {
		case <-s.stop:
			return
		case <-obs:
		case <-kick:
		}
		s.refresh()
	}
}

// refresh publishes the cluster view if it changed.
func (s *Store) refresh() {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	s.refreshLocked()
}

func (s *Store) refreshLocked() {
	if st := s.clusterState(); st != s.cluster.latest() {
		s.cluster.publish(st)
	}
}

// clusterState reads the cluster view from raft (the leader from the tail
// while this store follows and raft knows none: see Store.leader).
func (s *Store) clusterState() State {
	l := s.leader()
	return State{Role: roleOf(s.raft.State()), LeaderID: l.ID, LeaderAddress: l.Address,
		Term: l.Term, MembershipIndex: s.fsm.configIndex.Load()}
}

// watchedObservation picks the observations that change the cluster view.
func watchedObservation(o *raft.Observation) bool {
	switch o.Data.(type) {
	case raft.LeaderObservation, raft.RaftState, raft.PeerObservation:
		return true
	}
	return false
}

// kicker wakes watchLoop without blocking: one pending wake-up is enough,
// since watchLoop reads the whole view.
type kicker chan struct{}

func (k kicker) kick() {
	select {
	case k <- struct{}{}:
	default:
	}
}

// WaitApplied waits until this node has applied every command entry up to
// index (AppliedIndex reaches it): a follower that waits for the index the
// leader applied a write at reads that write. It fails with ctx's error, or
// ErrClosed if the store closes first.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the subscription
	cur, applied := s.WatchApplied(ctx)
	for cur.Index < index {
		var open bool
		if cur, open = <-applied; !open {
			if err := ctx.Err(); err != nil {
				return err
			}
			return fmt.Errorf("consensus: %w", ErrClosed)
		}
	}
	return nil
}
