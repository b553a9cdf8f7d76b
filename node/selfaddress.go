package node

import (
	"context"
	"time"

	"github.com/meshreg/meshreg/consensus"
)

// voterAdder is the metadata store's AddVoter (consensus.Store), which
// also moves a member to a new address.
type voterAdder interface {
	AddVoter(ctx context.Context, id, addr string) error
}

// recordOwnAddress fixes this node's Raft address in the configuration
// when it leads a cluster of itself at another address than it listens on
// now: after `meshreg restore` (which cannot know the address) or
// `meshreg recover` on a node that moved. A member of a larger cluster
// asks the leader instead (joinOnce).
func (n *Node) recordOwnAddress() {
	a, ok := n.meta.(voterAdder)
	if !ok || n.meta.Status().State != consensus.Leader || !n.alone() {
		return
	}
	self, addr := n.host.ID().String(), n.host.RaftAddress()
	if old, ok := n.memberAddress(); !ok || old == addr {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	if err := a.AddVoter(ctx, self, addr); err != nil {
		n.log.Warn("could not record this node's Raft address; nodes that join it may not reach it", "address", addr, "err", err)
		return
	}
	n.log.Info("recorded this node's Raft address", "address", addr)
}
