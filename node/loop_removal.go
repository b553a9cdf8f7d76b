package node

import (
	"context"
	"time"

	"github.com/meshreg/meshreg/consensus"
)

// Leaderless members check now and then whether they were removed: a
// member cut off from the others (a partition) longer than the leader's
// --dead-server-timeout misses its removal just as a stopped one does, and
// would wait for a leader for good (rejoin.go).
const (
	// leaderlessCheckAfter is how long a member goes without a leader
	// before it asks; leaderlessCheckEvery how often it asks again.
	leaderlessCheckAfter = 10 * time.Second
	leaderlessCheckEvery = 10 * time.Second
)

// stateWatcher publishes this node's view of the cluster (Membership).
type stateWatcher interface {
	Watch(ctx context.Context) (consensus.State, <-chan consensus.State)
}

// removalWatch runs, once this node is a member, until ctx ends: when it
// has had no leader for after, it asks whether it is still a member (check,
// again every every), and joins again if it is not (rejoin).
//
// It follows the store's events (a leader lost or found, a membership
// change); its only timer runs while this node is a leaderless member,
// since what it waits for then is time passing without a leader.
type removalWatch struct {
	meta     stateWatcher
	isMember func() bool // this node is in the configuration it knows
	// check asks the --join targets whether this node is still a member
	// (Node.checkRound); rejoin joins again through them (Node.joinThrough).
	check        func(ctx context.Context) (removed, sure bool)
	rejoin       func(ctx context.Context)
	after, every time.Duration // leaderlessCheckAfter, leaderlessCheckEvery; tests shorten them
}

func newRemovalWatch(meta stateWatcher, isMember func() bool, check func(ctx context.Context) (removed, sure bool), rejoin func(ctx context.Context)) *removalWatch {
	return &removalWatch{meta: meta, isMember: isMember, check: check, rejoin: rejoin,
		after: leaderlessCheckAfter, every: leaderlessCheckEvery}
}

func (w *removalWatch) Run(ctx context.Context) error {
	st, changes := w.meta.Watch(ctx)
	timer := time.NewTimer(w.after)
	timer.Stop() // armed only while leaderless
	defer timer.Stop()
	var leaderless, asked time.Time
	for {
		var wake <-chan time.Time
		if now := time.Now(); !w.isMember() || st.LeaderID != "" {
			// Not a member (removed: noteRemoved says so), or following.
			leaderless = time.Time{}
		} else {
			if leaderless.IsZero() {
				leaderless = now
			}
			due := later(leaderless.Add(w.after), asked.Add(w.every))
			if !now.Before(due) {
				asked = now
				if removed, _ := w.check(ctx); removed {
					w.rejoin(ctx)
					leaderless = time.Time{}
				}
				continue
			}
			timer.Reset(due.Sub(now))
			wake = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case next, open := <-changes:
			if !open {
				return nil // the store closed; the node stops too
			}
			st = latestState(next, changes)
		case <-wake:
		}
		timer.Stop() // since Go 1.23, a stopped timer delivers nothing stale
	}
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
