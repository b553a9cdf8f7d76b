package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/p2p"
)

// tailProtocol carries the committed Raft log from a member to a follower
// of the metadata (follow.go): one long-lived stream per follower, spoken
// by the consensus store on both ends (consensus.Store.ServeTail and
// Follow). Only members serve it, and only to peers the gate lets through:
// members and followers that presented a valid pass (followpass.go).
const tailProtocol = "/meshreg/log-tail/1.0.0"

// streamer is the ability to serve and open long-lived streams
// (p2p.Host); a transport without it (a fake) neither serves nor follows
// a tail.
type streamer interface {
	HandleStreams(proto protocol.ID, fn p2p.StreamHandler)
	OpenStream(ctx context.Context, to peer.ID, proto protocol.ID) (io.ReadWriteCloser, error)
}

var _ streamer = (*p2p.Host)(nil)

// serveTailStreams registers tailProtocol on s, if it can stream.
func (n *Node) serveTailStreams(s ProtocolServer) {
	if st, ok := s.(streamer); ok {
		st.HandleStreams(tailProtocol, n.serveTail)
	}
}

// serveTail serves one follower's tail until the node closes or the
// stream ends. The gate admitted from; a node that is not a member has no
// committed log of its own to serve (a follower relaying to followers is a
// later step), so it refuses.
func (n *Node) serveTail(from peer.ID, s io.ReadWriteCloser) {
	f, ok := n.followers()
	if !ok || !n.isMember() {
		n.log.Debug("refused a tail stream: this node is not a member", "from", from)
		_ = s.Close()
		return
	}
	if err := n.refuseRevoked(from.String()); err != nil {
		// The gate lets no revoked peer in; one revoked since is told why.
		n.log.Info("refused the tail stream of a revoked follower", "from", from)
		if err := consensus.RefuseTail(s, err.Error()); err != nil {
			n.log.Debug("refusing a revoked follower", "from", from, "err", err)
		}
		return
	}
	ctx, cancel := context.WithCancel(n.ctx)
	defer cancel()
	tc, ok := n.tails.add(from, time.Now(), cancel)
	if !ok {
		n.log.Warn("refused a follower: this member serves as many as it may", "from", from, "max", maxTailClients)
		reason := fmt.Sprintf("member %s serves %d followers, its most: tail another member", n.host.ID(), maxTailClients)
		if err := consensus.RefuseTail(s, reason); err != nil {
			n.log.Debug("refusing a follower", "from", from, "err", err)
		}
		return
	}
	defer n.tails.remove(tc)
	if n.refuseRevoked(from.String()) != nil {
		return // revoked while it was being added: cut missed it
	}
	if n.peers.labelsOf(from.String()) == (peerLabels{}) {
		go n.learnFollowerPlace(ctx, from)
	}
	n.log.Debug("serving the metadata tail", "to", from)
	if err := f.ServeTail(ctx, s, tc.sent.Store); err != nil && n.ctx.Err() == nil {
		n.log.Debug("a metadata tail ended", "to", from, "err", err)
	}
}

// learnFollowerPlace asks a follower where it runs (infoProtocol), for the
// fleet view, until it answers, ctx ends (its tail did) or a few tries
// failed: a new follower lets this member in only once its tail taught it
// the configuration.
func (n *Node) learnFollowerPlace(ctx context.Context, p peer.ID) {
	wait := time.Second
	for range 5 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		actx, cancel := context.WithTimeout(ctx, rpcTimeout)
		_, err := n.askInfo(actx, p)
		cancel()
		if err == nil {
			return
		}
		wait *= 2
	}
}

// tailDialer is the store's consensus.TailDialer: it opens tailProtocol
// streams to members. node is set once the node is made (Open), before
// the store follows.
type tailDialer struct {
	node atomic.Pointer[Node]
}

var _ consensus.TailDialer = (*tailDialer)(nil)

func (d *tailDialer) DialTail(ctx context.Context, member consensus.Server) (io.ReadWriteCloser, error) {
	n := d.node.Load()
	if n == nil {
		return nil, errors.New("the node is not ready to follow yet")
	}
	st, ok := n.host.(streamer)
	if !ok {
		return nil, errors.New("this node's transport cannot open a tail stream")
	}
	id, err := peerOf(n.host, member)
	if err != nil {
		return nil, err
	}
	if id == n.host.ID() {
		return nil, errors.New("a node does not tail itself")
	}
	if rev := n.revokedSelf(); rev != nil {
		return nil, revokedError{rev.Reason}
	}
	// The member admits this follower once it saw its pass; a member new
	// since the last presentation has not. Presented at every dial: a
	// dial follows a tail that ended, perhaps because the member no
	// longer admits this node (revoke.go), which only its answer to a
	// pass tells (its gate just resets the stream).
	n.passes.forget(id)
	if err := n.presentPass(ctx, id); err != nil {
		return nil, fmt.Errorf("tailing from %s: %w", id, err)
	}
	return st.OpenStream(ctx, id, tailProtocol)
}

// preferTail orders the members to tail from (the store's
// Config.TailPrefer): see orderTail, with the labels this node learned.
func (n *Node) preferTail(members []consensus.Member) []consensus.Member {
	leader := n.meta.Status().LeaderID
	n.peers.mu.Lock()
	labels := make(map[string]peerLabels, len(members))
	for _, m := range members {
		if id, err := peer.Decode(m.ID); err == nil {
			if l, ok := n.peers.labels[id]; ok {
				labels[m.ID] = l
			}
		}
	}
	n.peers.mu.Unlock()
	return orderTail(members, leader, n.peers.self, labels)
}

// orderTail orders members to tail from: the leader last (its cost is the
// cluster's), then the nearest first (same zone, then same region, as far
// as labels tell; unknown ones with the farthest), then non-voters before
// voters (they carry no quorum work). Stable otherwise.
func orderTail(members []consensus.Member, leader string, self peerLabels, labels map[string]peerLabels) []consensus.Member {
	out := slices.Clone(members)
	rank := func(m consensus.Member) (r int) {
		if m.ID == leader {
			r += 100
		}
		l, ok := labels[m.ID]
		switch {
		case !ok:
			r += 20
		case l == self:
		case l.Region == self.Region:
			r += 10
		default:
			r += 20
		}
		if m.Suffrage == consensus.Voter {
			r++
		}
		return r
	}
	slices.SortStableFunc(out, func(a, b consensus.Member) int { return cmp.Compare(rank(a), rank(b)) })
	return out
}
