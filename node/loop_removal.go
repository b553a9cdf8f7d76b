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
// again every every), and joins again if it is not (rejoin). A member that
// learns its removal while leaderless keeps asking and joins again too.
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
	// healed is when this member last found a leader after a stretch
	// without one; toldRemoved that it learned its removal as a cut
	// healed (and asked at once).
	var leaderless, asked, healed time.Time
	var toldRemoved bool
	for {
		var wake <-chan time.Time
		member := w.isMember()
		now := time.Now()
		if member && st.LeaderID != "" && !leaderless.IsZero() {
			healed = now
		}
		// Removed while leaderless, or just as it found a leader again
		// after a stretch without one: cut off past the leader's
		// --dead-server-timeout, and told so by the leader's last
		// AppendEntries (raft sends a removed server one, which names the
		// leader just before the configuration without this node). The
		// check finds that removal as it would have without the message,
		// and it joins again.
		cutOff := !member && (!leaderless.IsZero() || !healed.IsZero() && now.Sub(healed) < w.after)
		if member {
			toldRemoved = false
		}
		if (member && st.LeaderID != "") || (!member && !cutOff) {
			// Following, or removed while in touch with the leader (by
			// an operator: noteRemoved says so).
			leaderless = time.Time{}
		} else {
			// A leaderless member, or one removed as its cut healed.
			healed = time.Time{}
			if leaderless.IsZero() {
				leaderless = now
			}
			if cutOff && !toldRemoved {
				toldRemoved = true
				leaderless = now.Add(-w.after) // ask at once
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
