package node

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/node/replicate"
)

// peerView is the cluster as the fetches and replication see it: who is a
// member, who is live, where each is, and who holds what.
type peerView struct{ n *Node }

var (
	_ fetch.Cluster     = peerView{}
	_ replicate.Cluster = peerView{}
)

// IsMember: members and the followers admitted here (isClusterPeer); the
// replicas and holders a node counts (Live) stay members only.
func (v peerView) IsMember(p peer.ID) bool { return v.n.isClusterPeer(p) }
func (v peerView) Live() []peer.ID         { return v.n.livePeers() }

// Admit is fetch.Cluster's check before a peer is asked for a blob:
// members, and followers admitted here. A member has met every follower
// (each presents its pass to all members, follow.go), but a follower has
// met only the followers that fetched from it: one named by the DHT or a
// redirect that it has not met proves itself by the exchange of passes
// (presentPass: this node presents its own, the other answers with its
// own, which this node checks against the members it knows). A peer that
// cannot is refused, as before.
func (v peerView) Admit(ctx context.Context, p peer.ID) bool {
	n := v.n
	if n.isClusterPeer(p) {
		return true
	}
	if !n.following() {
		return false
	}
	if err := n.presentPass(ctx, p); err != nil {
		n.log.Debug("a peer named as a holder did not prove it is a follower of this cluster", "peer", p, "err", err)
		return false
	}
	return n.isClusterPeer(p)
}

func (v peerView) Holders(ctx context.Context, peers []peer.ID, digests []digest.Digest) map[digest.Digest][]peer.ID {
	return v.n.replicas.Holders(ctx, peers, digests)
}

// Penalise records a peer that sent wrong bytes (see penaltyTime).
func (v peerView) Penalise(p peer.ID, why string) { v.n.penalise(p, why) }

// Order puts the nearest peers first, and the least loaded first among
// those as near.
func (v peerView) Order(ctx context.Context, peers []peer.ID) {
	v.n.peers.nearestFirst(peers)
	v.n.leastLoadedFirst(ctx, peers)
}

// SpreadFirst puts peers outside this node's zone first.
func (v peerView) SpreadFirst(peers []peer.ID) { v.n.peers.spreadFirst(peers) }
