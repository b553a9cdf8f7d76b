package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/meshreg/meshreg/consensus"
)

// clusterChanges is what the leader's membership upkeep reads of the Raft
// cluster and the changes it makes (Membership, consensus.Store).
type clusterChanges interface {
	Watch(ctx context.Context) (consensus.State, <-chan consensus.State)
	Members() ([]consensus.Member, error)
	RemoveServer(ctx context.Context, id string) error
	Promote(ctx context.Context, id string) error
}

// upkeepRules are the settings of the leader's membership upkeep (from
// Config).
type upkeepRules struct {
	// DeadServerTimeout is how long a member may stay unreachable before
	// it is removed for good.
	DeadServerTimeout time.Duration
	// StabilizationTime is how long a non-voter must stay healthy before
	// it is promoted.
	StabilizationTime time.Duration
	// Voters is how many voters the leader keeps (an even count keeps one
	// less).
	Voters int
}

// membership is the loop that runs on every node; on the leader it keeps
// Voters healthy voters: it removes voters that stayed unreachable for
// DeadServerTimeout and promotes healthy non-voters in their place
// (promotion.go), so a cluster built by joins survives the loss of any
// minority.
//
// Removing a dead voter never costs the quorum: this node leads, so a
// majority of the voters is alive, and it stays a majority of the smaller
// set.
//
// It is driven by the store's events (clusterChanges.Watch): a change of
// leader or role starts or stops the leader's work at once, a membership
// change is looked at at once (this node removed, a new non-voter). Only
// what no Raft event reports runs on a timer, every upkeepEvery: whether
// members are connected (the status's contact times, and a dead member's
// DeadServerTimeout, which must pass) and whether non-voters stay healthy
// (StabilizationTime, which must pass without a break).
//
// Its state (unreachableSince, the promoter) is owned by Run's goroutine.
type membership struct {
	meta      clusterChanges
	self      string // this node's Raft server id
	connected func(id string) bool
	// note runs at every step, on every node, leader or not: it records
	// contacts and a removal of this node (Node.noteContacts,
	// Node.noteRemoved).
	note  func()
	rules upkeepRules
	log   *slog.Logger
	now   func() time.Time // time.Now; tests move it on
	every time.Duration    // upkeepEvery; tests lengthen it to see events alone at work

	unreachableSince map[string]time.Time
	promote          *promoter
}

// newMembership returns the membership loop of the node self over meta;
// health checks a non-voter before its promotion (Node.checkHealth); where
// says where a member runs, to spread the voters (promotions).
func newMembership(meta clusterChanges, self string, connected func(id string) bool, health func(ctx context.Context, id string) error,
	where func(id string) peerLabels, note func(), rules upkeepRules, log *slog.Logger) *membership {
	return &membership{
		meta: meta, self: self, connected: connected, note: note, rules: rules, log: log, now: time.Now, every: upkeepEvery,
		unreachableSince: map[string]time.Time{},
		promote:          newPromoter(self, health, where, meta.Promote, rules.StabilizationTime, rules.Voters, log),
	}
}

// upkeepEvery is how often the membership loop looks at what no event
// reports (see membership).
const upkeepEvery = time.Second

func (m *membership) Run(ctx context.Context) error {
	st, changes := m.meta.Watch(ctx)
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		m.step(ctx, st)
		select {
		case <-ctx.Done():
			return nil
		case next, open := <-changes:
			if !open {
				changes = nil // the store closed; the node stops too
				continue
			}
			st = latestState(next, changes)
		case <-t.C:
		}
	}
}

// latestState returns the newest state waiting in changes, or st: a burst
// of changes is handled once.
func latestState(st consensus.State, changes <-chan consensus.State) consensus.State {
	for {
		select {
		case next, open := <-changes:
			if !open {
				return st
			}
			st = next
		default:
			return st
		}
	}
}

// step is one round of the loop, with st the store's latest view: it
// records contacts and a removal of this node, and on the leader removes
// members unreachable for too long and promotes non-voters.
func (m *membership) step(ctx context.Context, st consensus.State) {
	m.note()
	if st.Role != consensus.Leader {
		clear(m.unreachableSince)
		m.promote.reset()
		return
	}
	members, err := m.meta.Members()
	if err != nil {
		return
	}
	now := m.now()
	for _, mem := range members {
		if mem.ID == m.self {
			continue
		}
		if m.connected(mem.ID) {
			delete(m.unreachableSince, mem.ID)
			continue
		}
		since, seen := m.unreachableSince[mem.ID]
		if !seen {
			m.unreachableSince[mem.ID] = now
			continue
		}
		if now.Sub(since) < m.rules.DeadServerTimeout {
			continue
		}
		if err := m.meta.RemoveServer(ctx, mem.ID); err != nil {
			m.log.Warn("removing an unreachable member failed", "peer", mem.ID, "err", err)
			continue
		}
		delete(m.unreachableSince, mem.ID)
		m.log.Warn("removed a member unreachable for too long", "peer", mem.ID, "suffrage", mem.Suffrage,
			"unreachable_for", now.Sub(since).Round(time.Second))
	}
	// Promotion (promotion.go) sees the configuration after removals.
	if members, err = m.meta.Members(); err == nil {
		m.promote.step(ctx, members, m.now())
	}
}
