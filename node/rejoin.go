package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
)

// A member that was down longer than --dead-server-timeout was removed by
// the leader while it could not hear it: restarted with its data dir, its
// own Raft configuration still names it, so it would wait for good for a
// leader that no longer talks to it. So a restarted member with --join
// first asks the --join targets (memberProtocol "check", open to any peer,
// answering only about the asker itself) whether it is still in the
// cluster's configuration. If a member that knows a leader says no, the
// node joins again as a non-voter, like a new node (same admission: the
// cluster key, a join token, or the fleet's shared --join-token), and the
// leader's promotion makes it a voter once it is caught up.
//
// Nothing is deleted: the blobs stay on disk, and Raft reconciles the
// metadata. The leader sends the node its log from where the two agree
// (entries of the node's log that the cluster never committed are
// overwritten, as for any follower), or a snapshot if it compacted its log
// past the node's; entries the node had applied were committed by the
// cluster, so they are in the leader's log too. The node never bootstraps
// (it has Raft state), so it cannot start a second cluster, and while it is
// out the others refuse its Raft streams and its pre-votes, so it cannot
// disturb them.

// checkTimeout bounds one membership check.
const checkTimeout = 5 * time.Second

// serveCheck answers a node that asks whether it is in this node's
// configuration. Only a member that knows a leader names it (its answer
// counts); any peer may ask, about itself only.
func (n *Node) serveCheck(from peer.ID, req memberRequest) []byte {
	res := memberResult{}
	if req.ID != from.String() {
		res.Error = fmt.Sprintf("%v: peer %s asked about %q: a node can only ask about itself", ErrNotAdmitted, from, req.ID)
	} else {
		res.Member = n.isMemberID(req.ID)
		if n.isMember() {
			res.Leader = n.meta.Status().LeaderID
		}
	}
	out, _ := json.Marshal(res)
	return out
}

// removedWhileDown reports whether the cluster removed this node while it
// was down: it asks the --join targets until one that is a member and knows
// a leader answers, or until this node hears from a leader itself (then it
// is a member), or ctx ends.
func (n *Node) removedWhileDown(ctx context.Context) bool {
	n.join.wait("checking with " + strings.Join(n.cfg.Join, ", ") + " that this node is still a member of the cluster")
	defer func() {
		if !n.join.removedWhileDown() {
			n.join.done()
		}
	}()
	var wait backoff
	for {
		if n.meta.Status().LeaderID != "" {
			return false
		}
		if removed, sure := n.checkRound(ctx); sure {
			return removed
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(min(wait.step(), 5*time.Second)):
		}
	}
}

// checkRound asks the --join targets, then the other members of the
// configuration this node knows, in turn, whether this node is in their
// configuration, until one answers for sure (sure: it is a member that
// knows a leader). On a "no" it marks the node removed. Asking the members
// too matters for a node started without --join (the one that bootstrapped
// the cluster): removed while its removal could not reach it (a leader
// removed right after handing leadership over), it would otherwise stand
// for election forever without knowing why.
func (n *Node) checkRound(ctx context.Context) (removed, sure bool) {
	for _, target := range n.checkTargets() {
		member, known, err := n.checkVia(ctx, target)
		if err != nil {
			n.log.Debug("membership check failed", "target", target, "err", err)
			continue
		}
		if !known {
			continue
		}
		if member {
			return false, true
		}
		n.join.setRemovedWhileDown(true)
		if len(n.cfg.Join) == 0 {
			n.join.wait("this node was removed from the cluster (a member says its configuration does not name it): " +
				"restart it with --join <a member> to join again")
			n.log.Warn("this node was removed from the cluster: it takes no writes; restart it with --join <a member> to join again", "told_by", target)
			return true, true
		}
		n.log.Warn("this node was removed from the cluster while it was down or unreachable (longer than the leader's --dead-server-timeout): "+
			"rejoining as a non-voter; its blobs stay, its metadata comes back from the leader", "told_by", target)
		return true, true
	}
	return false, false
}

// checkTargets are whom checkRound asks: the --join targets, then the
// Raft addresses of the other members of the configuration this node
// knows.
func (n *Node) checkTargets() []string {
	targets := slices.Clone(n.cfg.Join)
	members, err := n.meta.Members()
	if err != nil {
		return targets
	}
	self := n.host.ID().String()
	for _, m := range members {
		if m.ID != self && m.Address != "" {
			targets = append(targets, m.Address)
		}
	}
	return targets
}

// checkVia asks target whether this node is in its configuration: known is
// whether the answer counts (target is a member that knows a leader).
func (n *Node) checkVia(ctx context.Context, target string) (member, known bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	addr := target
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		if addr, err = n.raftAddressOf(ctx, target); err != nil {
			return false, false, err
		}
	}
	if err := n.host.Connect(ctx, addr); err != nil {
		return false, false, explainConnect(err)
	}
	id, err := peerOf(n.host, consensus.Server{Address: addr})
	if err != nil {
		return false, false, err
	}
	if id == n.host.ID() {
		return false, false, errors.New("the target is this node itself")
	}
	req, _ := json.Marshal(memberRequest{Op: "check", ID: n.host.ID().String()})
	resp, err := n.host.Request(ctx, id, memberProtocol, req, maxControlLen)
	if err != nil {
		return false, false, err
	}
	var res memberResult
	if err := json.Unmarshal(resp, &res); err != nil {
		return false, false, fmt.Errorf("bad check answer from %s: %w", id, err)
	}
	if res.Error != "" {
		return false, false, errors.New(res.Error)
	}
	return res.Member, res.Leader != "", nil
}
