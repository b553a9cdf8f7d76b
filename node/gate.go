package node

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshreg/meshreg/consensus"
)

// Who may open which of this node's libp2p protocols (the p2p host asks
// peerGate.allow for every inbound stream, before a byte is read):
//
//	protocol                                  who
//	/meshreg/member/1.0.0                     anyone: a join request comes from a
//	                                          peer that is not a member yet; serveMember
//	                                          refuses every other request from non-members
//	                                          and asks admitJoin about joins
//	/meshreg/hello/1.0.0                      members and admitted peers; anyone while
//	                                          this node has no Raft configuration yet
//	                                          (the --bootstrap-expect exchange)
//	raft, forward, index, info, has,          members and admitted peers
//	replicate, blob, kad (DHT), anything new
//
// Members are the servers of the latest Raft configuration this node
// knows. Admitted peers are the few this node itself chose to hear from
// before it is a member, for a limited time: the node it joins through and
// the leader that answers the join (whose AppendEntries a new member must
// accept before it knows the configuration), and the peers it bootstraps
// with under --bootstrap-expect.
type peerGate struct {
	// meta is the metadata store once it is open; until then only
	// admitted peers pass.
	meta atomic.Pointer[consensus.Store]

	mu       sync.Mutex
	admitted map[peer.ID]time.Time // until when
}

// admissionTTL is how long an admitted peer may open streams without being
// a member; a joiner learns the configuration well within it.
const admissionTTL = 5 * time.Minute

// maxAdmitted bounds the admitted set (it only grows from this node's own
// --join targets and the peers they name).
const maxAdmitted = 256

func newPeerGate() *peerGate { return &peerGate{admitted: map[peer.ID]time.Time{}} }

// allow is the p2p.Authorizer of the node's host.
func (g *peerGate) allow(p peer.ID, proto protocol.ID) bool {
	switch proto {
	case memberProtocol:
		return true
	case helloProtocol:
		if !g.configured() {
			return true
		}
	}
	return g.isMember(p) || g.isAdmitted(p)
}

// isMember reports whether p is a server of the latest Raft configuration.
func (g *peerGate) isMember(p peer.ID) bool {
	meta := g.meta.Load()
	if meta == nil {
		return false
	}
	members, err := meta.Members()
	if err != nil {
		return false
	}
	id := p.String()
	for _, m := range members {
		if m.ID == id {
			return true
		}
	}
	return false
}

// configured reports whether this node knows a Raft configuration (it
// bootstrapped, joined, or was removed from one).
func (g *peerGate) configured() bool {
	meta := g.meta.Load()
	if meta == nil {
		return false
	}
	members, err := meta.Members()
	return err == nil && len(members) > 0
}

// admit lets p open streams for ttl without being a member. It is the hook
// for admission: whoever decides that a peer is about to become a member
// (a join through it, a bootstrap with it) admits it here.
func (g *peerGate) admit(p peer.ID, ttl time.Duration) {
	if p == "" {
		return
	}
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.admitted) >= maxAdmitted {
		for q, until := range g.admitted {
			if now.After(until) {
				delete(g.admitted, q)
			}
		}
		if len(g.admitted) >= maxAdmitted {
			return
		}
	}
	g.admitted[p] = now.Add(ttl)
}

func (g *peerGate) isAdmitted(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.admitted[p]
	if ok && time.Now().After(until) {
		delete(g.admitted, p)
		return false
	}
	return ok
}

// removed reports whether this node knows a Raft configuration that does
// not name it: it was a member and was removed.
func (n *Node) removed() bool {
	return n.gate.configured() && !n.isMember()
}

// noteRemoved logs, once, that this node was removed from the cluster.
func (n *Node) noteRemoved() {
	if !n.removed() {
		n.wasRemoved.Store(false)
		return
	}
	if n.wasRemoved.CompareAndSwap(false, true) {
		n.log.Warn("this node was removed from the cluster: it takes no writes and its Raft state is " +
			n.meta.Status().State + "; restart it with --join <a member> to join again")
	}
}
