package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
)

// Followers of the metadata. Raft membership is bounded: --voters voters
// plus at most --max-raft-members non-voters. The leader answers any other
// joiner "follow" (placeJoiner): with the members, the leader and a pass
// (followpass.go), and the joiner follows the metadata without being a
// member: its store tails the committed log from a member over
// tailProtocol (tail.go), applies it to its own state, serves reads
// locally and forwards writes to the leader as a member does. The
// leader's cost then depends on the members, not on the hosts.
//
// A restarted follower resumes following (resumeFollowing) instead of
// joining again. When the configuration has fewer non-voters than
// --max-raft-members (a member was removed for good), followers ask to
// become members (seeker): the one whose zone has no member at once, the
// others after a jittered delay, so the zone that lost a member gets the
// slot; the leader's promotion (promotion.go) then makes voters of
// non-voters as before.

// followerStore is what a follower needs of the metadata store beyond
// Metadata (consensus.Store implements it; a node's fakes may not, and
// then the node is always a member or a joiner).
type followerStore interface {
	// Follow starts following from one of members (nil: the configuration
	// learned and kept earlier).
	Follow(members []consensus.Server) error
	// StopFollowing stops the tail before this node becomes a member.
	StopFollowing()
	Following() bool
	// FollowedBefore reports whether the store kept a configuration
	// learned while following: a restart resumes following.
	FollowedBefore() bool
	TailStatus() consensus.TailStatus
	// ServeTail serves one follower's tail on conn (a member's side).
	// sent hears the index sent through (see consensus.Store.ServeTail).
	ServeTail(ctx context.Context, conn io.ReadWriteCloser, sent func(through uint64)) error
}

var _ followerStore = (*consensus.Store)(nil)

// DefaultMaxRaftMembers is --max-raft-members by default.
const DefaultMaxRaftMembers = 7

// maxFollowMembers bounds the members a "follow" answer may list.
const maxFollowMembers = 128

// followers returns the store as a followerStore, ok false if it cannot
// follow.
func (n *Node) followers() (followerStore, bool) {
	f, ok := n.meta.(followerStore)
	return f, ok
}

// following reports whether this node follows the metadata.
func (n *Node) following() bool {
	f, ok := n.followers()
	return ok && f.Following()
}

// nonvoters counts the non-voters of members other than id.
func nonvoters(members []consensus.Member, except string) int {
	count := 0
	for _, m := range members {
		if m.Suffrage != consensus.Voter && m.ID != except {
			count++
		}
	}
	return count
}

// placeJoiner is the leader's join decision: a member stays one (it comes
// back on a new address), a joiner becomes a non-voter while the
// non-voters are fewer than --max-raft-members (the voters come from them,
// promotion.go), and otherwise it is told to follow. It returns the
// answer for the joiner.
func (n *Node) placeJoiner(ctx context.Context, req memberRequest) (memberResult, error) {
	members, err := n.meta.Members()
	if err != nil {
		return memberResult{}, fmt.Errorf("reading the members: %w", err)
	}
	member := slices.ContainsFunc(members, func(m consensus.Member) bool { return m.ID == req.ID })
	newRegion := len(req.Region) <= maxRegionLen && !n.regionHasMember(members, req.Region)
	if admitAsMember(members, req.ID, n.cfg.Voters, n.cfg.MaxRaftMembers, newRegion) {
		if err := n.meta.AddNonvoter(ctx, req.ID, req.Address); err != nil {
			return memberResult{}, err
		}
		n.log.Info("added a member", "peer", req.ID, "already_member", member, "region", req.Region, "first_of_its_region", newRegion)
		return memberResult{Leader: n.meta.Status().LeaderID}, nil
	}
	id, err := peer.Decode(req.ID)
	if err != nil {
		return memberResult{}, fmt.Errorf("joiner id %q is not a peer id: %w", req.ID, err)
	}
	pass, err := n.issuePassTo(id)
	if err != nil {
		return memberResult{}, err
	}
	// The joiner is admitted (admitJoin): admit it as a follower here at
	// once, its writes come here.
	n.gate.admitFollower(id, followerAdmission)
	n.log.Info("the Raft configuration is full: the joiner follows the metadata without being a member",
		"peer", req.ID, "nonvoters", nonvoters(members, req.ID), "max_raft_members", n.cfg.MaxRaftMembers)
	return memberResult{Leader: n.meta.Status().LeaderID, Follow: true, Members: members, Pass: pass}, nil
}

// admitAsMember is the leader's join decision for joiner: a member stays
// one; a joiner becomes a non-voter while the non-voters (itself not
// counted) are fewer than maxNonvoters, or while the voters and non-voters
// together are fewer than the voter target (the promotion needs
// candidates: a lone first node needs two even with maxNonvoters 0), or
// when it comes from a region without a member (newRegion): every region
// keeps a member, so its reads of a miss and its followers' tails stay in
// it, with at most maxRegionSeats non-voters past maxNonvoters.
func admitAsMember(members []consensus.Member, joiner string, voterTarget, maxNonvoters int, newRegion bool) bool {
	if slices.ContainsFunc(members, func(m consensus.Member) bool { return m.ID == joiner }) {
		return true
	}
	if voterTarget%2 == 0 {
		voterTarget-- // as the promotion keeps it (promotion.go)
	}
	others := nonvoters(members, joiner)
	voters := len(members) - nonvoters(members, "")
	return others < maxNonvoters || voters+others < voterTarget || newRegion && others < maxNonvoters+maxRegionSeats
}

// maxRegionSeats bounds the non-voters admitted past --max-raft-members
// for regions that had no member: the region is the joiner's word, so a
// hostile joiner could name a new one each time.
const maxRegionSeats = 8

// maxRegionLen bounds a region name a joiner sends.
const maxRegionLen = 128

// regionHasMember reports whether a member runs in region, as far as this
// node knows the members' places (their health answers and info; this
// node's own --region). An empty region is every region.
func (n *Node) regionHasMember(members []consensus.Member, region string) bool {
	if region == "" {
		return true
	}
	for _, m := range members {
		at := n.peers.labelsOf(m.ID)
		if m.ID == n.host.ID().String() {
			at = n.peers.self
		}
		if at.Region == region {
			return true
		}
	}
	return false
}

// servers are members as the store's Follow takes them.
func servers(members []consensus.Member) []consensus.Server {
	out := make([]consensus.Server, 0, len(members))
	for _, m := range members {
		out = append(out, consensus.Server{ID: m.ID, Address: m.Address})
	}
	return out
}

// checkFollowAnswer validates a "follow" answer from a peer: a hostile one
// must not make this node follow nonsense.
func checkFollowAnswer(res memberResult, self string) error {
	if len(res.Members) == 0 || len(res.Members) > maxFollowMembers {
		return fmt.Errorf("a follow answer with %d members (want 1 to %d)", len(res.Members), maxFollowMembers)
	}
	for _, m := range res.Members {
		if _, err := peer.Decode(m.ID); err != nil {
			return fmt.Errorf("a follow answer names member %q, not a peer id", m.ID)
		}
		if m.ID == self {
			return fmt.Errorf("a follow answer names this node as a member")
		}
	}
	if res.Pass == "" {
		return fmt.Errorf("a follow answer without a pass")
	}
	return nil
}

// becomeFollower makes this node follow the metadata after a "follow"
// answer that from gave: it keeps the pass, presents it to the members
// and starts the tail.
func (n *Node) becomeFollower(ctx context.Context, from peer.ID, res memberResult) error {
	f, ok := n.followers()
	if !ok {
		return fmt.Errorf("the cluster asks this node to follow the metadata, which its store cannot")
	}
	if err := checkFollowAnswer(res, n.host.ID().String()); err != nil {
		return fmt.Errorf("bad answer from %s: %w", from, err)
	}
	if _, err := verifyPass(res.Pass, n.host.ID(), time.Now(), func(id string) bool {
		return slices.ContainsFunc(res.Members, func(m consensus.Member) bool { return m.ID == id })
	}); err != nil {
		return fmt.Errorf("bad answer from %s: %w", from, err)
	}
	if err := n.passes.add(res.Pass); err != nil {
		return err
	}
	n.presentPassToAll(ctx, res.Members)
	if rev := n.revokedSelf(); rev != nil {
		return revokedError{rev.Reason}
	}
	if err := f.Follow(servers(res.Members)); err != nil {
		return fmt.Errorf("following the metadata: %w", err)
	}
	n.log.Info("following the metadata: the Raft configuration is full", "members", len(res.Members), "leader", res.Leader)
	return nil
}

// presentPassToAll presents this node's pass to every member (those not
// presented to within passRefresh), in parallel, each bounded by
// checkTimeout. It counts the members that admitted the pass (now or
// within passRefresh) and those that answered with a refusal.
func (n *Node) presentPassToAll(ctx context.Context, members []consensus.Member) (accepted, refused int) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	for _, m := range members {
		id, err := peerOf(n.host, consensus.Server{ID: m.ID, Address: m.Address})
		if err != nil || id == n.host.ID() {
			continue
		}
		wg.Go(func() {
			err := n.presentPass(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted++
			case errors.Is(err, errPassRefused) || errors.Is(err, errNoPass):
				refused++
			}
			if err != nil {
				n.log.Debug("presenting the follower pass failed", "member", id, "err", err)
			}
		})
	}
	wg.Wait()
	return accepted, refused
}

// resumeFollowing resumes following after a restart, if this node
// followed before and is not a member: it reports whether it did.
func (n *Node) resumeFollowing(ctx context.Context) bool {
	f, ok := n.followers()
	if !ok || !f.FollowedBefore() || n.isMember() {
		return false
	}
	if n.revokedSelf() != nil {
		return false // joinOnce stays put
	}
	if !n.passes.valid(time.Now()) {
		// Stopped longer than passTTL: no member would admit it.
		n.join.setPassesLost(true)
		n.log.Warn("this follower's passes expired while it was down: joining the cluster again through --join as a new node "+
			"(a join token or the cluster key admits it; it gets a member slot or a fresh pass)", "join", n.cfg.Join)
		return false
	}
	if members, err := n.meta.Members(); err == nil {
		n.presentPassToAll(ctx, members)
	}
	if err := f.Follow(nil); err != nil {
		n.log.Warn("resuming to follow the metadata failed; joining again", "err", err)
		return false
	}
	n.log.Info("resumed following the metadata")
	return true
}

// Slot filling (seeker).
const (
	// seekEvery is how often a follower looks for a free member slot.
	seekEvery = 2 * time.Second
	// seekDelay, plus up to seekJitter, is how long a follower whose zone
	// has a member waits before it asks for a free slot (one whose zone
	// has none asks at once).
	seekDelay  = 10 * time.Second
	seekJitter = 10 * time.Second
	// seekJitterNow spreads the followers of a zone without a member.
	seekJitterNow = 2 * time.Second
)

// seeker runs on every node; while it follows the metadata it keeps its
// pass presented to the members and asks for a member slot when one is
// free (see the top of this file).
type seeker struct {
	n *Node
	// free is when this follower first saw a free slot (zero: none), and
	// wait how long it waits before asking (0: at once).
	free time.Time
	wait time.Duration
}

func (s *seeker) Run(ctx context.Context) error {
	t := time.NewTicker(seekEvery)
	defer t.Stop()
	lastPresent := time.Time{}
	var lost passWatch
	doubt := false // the last round found members refusing the pass, none admitting it
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !s.n.following() || s.n.revokedSelf() != nil {
			s.free = time.Time{}
			lost.reset()
			continue
		}
		members, err := s.n.meta.Members()
		if err != nil || len(members) == 0 {
			continue
		}
		if doubt || time.Since(lastPresent) >= passRefresh/3 {
			// presentPass skips the members presented to lately: this
			// reaches a new member within a third of passRefresh. While
			// members refuse the pass and none admits it, every round
			// asks again (those not admitting it), to decide within
			// passLostRounds rounds; members that do not answer are only
			// asked at the usual pace.
			accepted, refused := s.n.presentPassToAll(ctx, members)
			lastPresent = time.Now()
			doubt = accepted == 0 && refused > 0
			if lost.observe(s.n.passes.valid(time.Now()), accepted, refused) {
				s.n.rejoinWithoutPass(ctx, refused)
				lost.reset()
				doubt = false
				continue
			}
		}
		s.step(ctx, members)
	}
}

// rejoinWithoutPass makes a follower whose passes no member accepts any
// more (passWatch) join again through --join as a new node: it stops its
// tail (refused for good) and joins; the answer makes it a member or a
// follower again, with a fresh pass. Without --join it can only say so.
func (n *Node) rejoinWithoutPass(ctx context.Context, refusedBy int) {
	const why = "this follower holds no pass a member of the cluster accepts (expired: it was stopped longer than their validity; " +
		"or every member that issued one has left the cluster)"
	if len(n.cfg.Join) == 0 {
		if n.passLostWarned.CompareAndSwap(false, true) {
			n.join.wait(why + ": restart it with --join <a member> to join again")
			n.log.Warn(why+": it cannot tail the metadata any more; restart it with --join <a member> to join again", "refused_by", refusedBy)
		}
		return
	}
	n.log.Warn(why+": joining the cluster again through --join as a new node", "join", n.cfg.Join, "refused_by", refusedBy)
	f, ok := n.followers()
	if !ok {
		return
	}
	n.join.setPassesLost(true)
	f.StopFollowing()
	n.joinThrough(ctx, n.cfg.Join)
}

// step asks for a member slot once one has been free long enough.
func (s *seeker) step(ctx context.Context, members []consensus.Member) {
	n := s.n
	// A region without a member gets a seat past the limit (admitAsMember).
	full := nonvoters(members, "") >= n.cfg.MaxRaftMembers && n.regionHasMember(members, n.cfg.Region)
	if full || n.meta.Status().LeaderID == "" {
		s.free = time.Time{}
		return
	}
	now := time.Now()
	if s.free.IsZero() {
		s.free = now
		// A zone without a member asks at once, but with a short jitter
		// of its own: there may be many followers in it.
		s.wait = rand.N(seekJitterNow)
		if n.zoneHasMember(members) {
			s.wait = seekDelay + rand.N(seekJitter)
		}
		n.log.Info("a member slot is free: asking for it", "in", s.wait.Round(time.Second),
			"nonvoters", nonvoters(members, ""), "max_raft_members", n.cfg.MaxRaftMembers)
	}
	if now.Sub(s.free) < s.wait {
		return
	}
	s.free = time.Time{}
	n.askForSlot(ctx, members)
}

// zoneHasMember reports whether a member runs in this node's zone (and
// region), as far as this node learned the members' labels.
func (n *Node) zoneHasMember(members []consensus.Member) bool {
	n.peers.mu.Lock()
	defer n.peers.mu.Unlock()
	for _, m := range members {
		id, err := peer.Decode(m.ID)
		if err != nil {
			continue
		}
		if l, ok := n.peers.labels[id]; ok && l == n.peers.self {
			return true
		}
	}
	return false
}

// askForSlot stops following and asks the leader to add this node as a
// non-voter; if the leader answers "follow" (another follower got the
// slot) or fails, it follows again.
func (n *Node) askForSlot(ctx context.Context, members []consensus.Member) {
	f, ok := n.followers()
	if !ok {
		return
	}
	if f.TailStatus().Stopped != "" {
		// An older release stopped at an entry it cannot apply: as a
		// member it would fail that entry and part from the others.
		return
	}
	st := n.meta.Status()
	leader, err := peerOf(n.host, consensus.Server{ID: st.LeaderID, Address: st.LeaderAddress})
	if err != nil {
		return
	}
	// The leader's AppendEntries must pass this node's gate before the
	// configuration naming them reaches it.
	for _, m := range members {
		if id, err := peer.Decode(m.ID); err == nil {
			n.gate.admit(id, admissionTTL)
		}
	}
	f.StopFollowing()
	res, err := n.requestJoin(ctx, leader, n.passes.get(n.isMemberID))
	switch {
	case err == nil && !res.Follow:
		n.log.Info("took a free member slot: this node is a Raft non-voter now, no longer a follower", "leader", leader)
		return
	case err == nil:
		if err = n.becomeFollower(ctx, leader, res); err == nil {
			n.log.Info("another follower took the free member slot: following again")
			return
		}
	}
	// The leader may have added this node after all (its answer was
	// lost): then raft applies from now on, and the tail must not.
	if n.addedAfterAll(ctx, members) {
		n.log.Info("took a free member slot (the leader's answer was lost): this node is a Raft non-voter now")
		return
	}
	if n.revokedSelf() != nil {
		return
	}
	n.log.Warn("asking for a free member slot failed: following again", "err", err)
	if err := f.Follow(servers(members)); err != nil {
		n.log.Error("following the metadata again failed", "err", err)
	}
}

// addedAfterAll asks up to three members whether this node is in their
// configuration; true once one that knows a leader says so.
func (n *Node) addedAfterAll(ctx context.Context, members []consensus.Member) bool {
	asked := 0
	for _, m := range members {
		if asked == 3 || m.Address == "" {
			continue
		}
		asked++
		if member, known, err := n.checkVia(ctx, m.Address); err == nil && known && member {
			return true
		}
	}
	return false
}

var _ loop = (*seeker)(nil)
