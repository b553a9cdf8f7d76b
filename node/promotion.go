package node

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
)

// Safe promotion. A joiner becomes a non-voter; the leader promotes it to
// voter only when
//
//   - it has been healthy for Config.StabilizationTime without a break:
//     connected, answering healthProtocol, following this leader in this
//     term, and caught up with the leader's log (at most maxPromotionLag
//     entries behind the leader's commit index); and
//   - the promotion leaves an odd number of voters: 1 → 3, not 1 → 2. Two
//     voters need both for a quorum, so losing either wedges the cluster;
//     three survive the loss of one. With one voter and one healthy
//     non-voter nothing happens; with two, both are promoted together.
//
// hashicorp/raft changes the configuration one server at a time, so "both
// together" is two changes in a row, the second right after the first is
// committed (the voter count is even for that moment only). If the
// cluster loses its quorum for good anyway, `meshreg recover` rewrites a
// survivor's configuration (see consensus.Recover).

// healthProtocol asks a member how far it follows the leader: the request is
// empty, the answer a healthAnswer.
const healthProtocol = "/meshreg/health/1.0.0"

// maxPromotionLag is how many entries a non-voter may be behind the
// leader's commit index and still count as caught up (raft-autopilot's
// default MaxTrailingLogs).
const maxPromotionLag = 250

// healthSample is how many non-voters the leader health checks per round
// (a second) while the voters are at their target: enough to keep a record
// of who is healthy for when a voter is lost, without a request to every
// member every second (see promoter.step).
const healthSample = 2

// healthTimeout bounds one health check.
const healthTimeout = 3 * time.Second

// healthAnswer is a member's view of its own Raft state.
type healthAnswer struct {
	// Where the member runs (--region, --zone): the leader spreads the
	// voters with it (promotions).
	peerLabels
	Term         uint64 `json:"term"`
	LeaderID     string `json:"leader_id"`
	AppliedIndex uint64 `json:"applied_index"`
}

func (n *Node) serveHealth(ctx context.Context, from peer.ID, _ []byte) []byte {
	st := n.meta.Status()
	out, _ := json.Marshal(healthAnswer{peerLabels: n.peers.self, Term: st.Term, LeaderID: st.LeaderID, AppliedIndex: st.AppliedIndex})
	return out
}

// checkHealth reports whether member id is healthy as the leader sees it:
// connected, answering, following this leader in the current term, and at
// most maxPromotionLag entries behind the commit index.
func (n *Node) checkHealth(ctx context.Context, id string) error {
	if !n.connected(id) {
		return fmt.Errorf("not connected")
	}
	pid, err := peer.Decode(id)
	if err != nil {
		return err
	}
	self := n.meta.Status()
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	resp, err := n.host.Request(ctx, pid, healthProtocol, nil, maxControlLen)
	if err != nil {
		return err
	}
	var a healthAnswer
	if err := json.Unmarshal(resp, &a); err != nil {
		return fmt.Errorf("bad health answer: %w", err)
	}
	n.peers.place(pid, a.peerLabels)
	switch {
	case a.Term != self.Term:
		return fmt.Errorf("in term %d, the leader in %d", a.Term, self.Term)
	case a.LeaderID != n.host.ID().String():
		return fmt.Errorf("follows leader %q, not this node", a.LeaderID)
	case a.AppliedIndex+maxPromotionLag < self.CommitIndex:
		return fmt.Errorf("applied index %d is more than %d behind the commit index %d", a.AppliedIndex, maxPromotionLag, self.CommitIndex)
	}
	return nil
}

// promotions returns the non-voters to promote, in order: those healthy
// since at least stabilization before now (healthySince holds the members
// healthy now, with the start of their current healthy stretch), as many as
// bring the voters closest to target without making their count even
// (an even target counts as the odd number below it).
//
// Voters are spread: each pick is the candidate whose region, then zone
// (where says where a member runs; unknown counts as no region and no zone), holds
// the fewest voters so far, so that losing one zone or region loses as few
// voters as the layout allows (three zones, three voters: one each; five
// voters over three regions: 2+2+1). Among equals, longest healthy first,
// then by id, so the choice is deterministic.
func promotions(members []consensus.Member, healthySince map[string]time.Time, now time.Time, stabilization time.Duration, target int, where func(id string) peerLabels) []string {
	voters := 0
	type candidate struct {
		id    string
		since time.Time
		at    peerLabels
	}
	var ready []candidate
	inRegion, inZone := map[string]int{}, map[peerLabels]int{}
	for _, m := range members {
		switch m.Suffrage {
		case consensus.Voter:
			voters++
			at := where(m.ID)
			inRegion[at.Region]++
			inZone[at]++
		case consensus.Nonvoter:
			if since, ok := healthySince[m.ID]; ok && now.Sub(since) >= stabilization {
				ready = append(ready, candidate{m.ID, since, where(m.ID)})
			}
		}
	}
	if target%2 == 0 {
		target--
	}
	want := min(target, voters+len(ready))
	if want%2 == 0 {
		want--
	}
	if want <= voters {
		return nil
	}
	out := make([]string, 0, want-voters)
	for range want - voters {
		best := slices.MinFunc(ready, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(inRegion[a.at.Region], inRegion[b.at.Region]), cmp.Compare(inZone[a.at], inZone[b.at]),
				a.since.Compare(b.since), cmp.Compare(a.id, b.id))
		})
		out = append(out, best.id)
		inRegion[best.at.Region]++
		inZone[best.at]++
		ready = slices.DeleteFunc(ready, func(c candidate) bool { return c.id == best.id })
	}
	return out
}

// promoter is the leader's promotion state, owned by the membership loop
// (loop_membership.go).
type promoter struct {
	self string // this node: never a candidate
	// health checks a non-voter (Node.checkHealth); promote makes it a
	// voter (Membership.Promote).
	health        func(ctx context.Context, id string) error
	where         func(id string) peerLabels
	promote       func(ctx context.Context, id string) error
	stabilization time.Duration
	voters        int
	log           *slog.Logger

	healthySince map[string]time.Time
	next         int // the first non-voter (by position) of the next sampled round
}

func newPromoter(self string, health func(ctx context.Context, id string) error, where func(id string) peerLabels,
	promote func(ctx context.Context, id string) error, stabilization time.Duration, voters int, log *slog.Logger) *promoter {
	return &promoter{self: self, health: health, where: where, promote: promote, stabilization: stabilization, voters: voters, log: log,
		healthySince: map[string]time.Time{}}
}

// reset forgets every health record (this node stopped leading).
func (p *promoter) reset() { clear(p.healthySince) }

// step checks the health of the non-voters in members and promotes those
// that promotions picks at now. It returns how many it promoted.
//
// Below the voter target it checks every non-voter, so that a promotion
// is always decided on a check of this round. At the target nothing is
// promoted, and the checks only keep healthySince up to date for when a
// voter is lost: it checks healthSample non-voters per round, in turn
// (each one every len/healthSample rounds), so the leader's cost does not
// grow with the cluster. A non-voter's healthy stretch then counts from
// its first good check, and a break between two sampled checks goes
// unseen; a failed check, at the latest in the full round that precedes
// any promotion, starts it again.
func (p *promoter) step(ctx context.Context, members []consensus.Member, now time.Time) int {
	current := map[string]bool{}
	var nonvoters []string
	voters := 0
	for _, m := range members {
		if m.Suffrage == consensus.Voter {
			voters++
		}
		if m.Suffrage != consensus.Nonvoter || m.ID == p.self {
			continue
		}
		current[m.ID] = true
		nonvoters = append(nonvoters, m.ID)
	}
	target := p.voters
	if target%2 == 0 {
		target--
	}
	check := nonvoters
	if voters >= target && len(nonvoters) > healthSample {
		check = make([]string, 0, healthSample)
		for i := range healthSample {
			check = append(check, nonvoters[(p.next+i)%len(nonvoters)])
		}
		p.next = (p.next + healthSample) % len(nonvoters)
	}
	for _, id := range check {
		if err := p.health(ctx, id); err != nil {
			if _, was := p.healthySince[id]; was {
				p.log.Info("a non-voter is not healthy; its stabilization starts again", "peer", id, "err", err)
			}
			delete(p.healthySince, id)
			continue
		}
		if _, ok := p.healthySince[id]; !ok {
			p.healthySince[id] = now
		}
	}
	for id := range p.healthySince {
		if !current[id] {
			delete(p.healthySince, id)
		}
	}
	promoted := 0
	for _, id := range promotions(members, p.healthySince, now, p.stabilization, p.voters, p.where) {
		if err := p.promote(ctx, id); err != nil {
			p.log.Warn("promoting a non-voter failed", "peer", id, "err", err)
			break // the next promotions would leave an even count
		}
		promoted++
		p.log.Info("promoted a non-voter", "peer", id, "healthy_for", now.Sub(p.healthySince[id]).Round(time.Second))
		delete(p.healthySince, id)
	}
	return promoted
}
