package node

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/p2p"
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
//	                                          (the --bootstrap-expect exchange), or
//	                                          when it has a cluster key or a fleet's
//	                                          shared --join-token (serveHello admits
//	                                          the sender; a late joiner learns there
//	                                          is a cluster to join)
//	raft, forward, index, info, has,          members and admitted peers
//	replicate, blob, vouch, origin-fetch,
//	log-tail, fleet, kad (DHT), anything new
//
// Members are the servers of the latest Raft configuration this node
// knows (on a follower of the metadata, the one its tail learned).
// Followers are admitted peers too, for followerAdmission after each
// presentation of a valid pass (followpass.go), on every protocol but
// Raft; handlers that serve only members (the log tail on a non-member)
// check again. Admitted peers are the few this node itself chose to hear from
// before it is a member, for a limited time: the node it joins through and
// the leader that answers the join (whose AppendEntries a new member must
// accept before it knows the configuration), and the peers it bootstraps
// with under --bootstrap-expect. And a peer that opens a Raft stream while
// outside this node's configuration is admitted once a member vouches for
// it (voucher): this node's configuration may be out of date. A follower
// an operator revoked (revoke.go) passes on memberProtocol only, where its
// every request is refused saying why: not as a member, an admitted peer
// or a follower, whatever it presents.
type peerGate struct {
	// meta is the metadata store once it is open; until then only
	// admitted peers pass.
	meta atomic.Pointer[Membership]
	// unknownRaft receives (without blocking) the peers refused on the
	// Raft protocol, for the voucher.
	unknownRaft chan peer.ID
	// helloOpen lets anyone open helloProtocol even once this node is
	// configured: set when serveHello can tell who is admitted (a cluster
	// key or a shared secret).
	helloOpen bool

	mu       sync.Mutex
	admitted map[peer.ID]time.Time // until when
	// followers are the followers of the metadata that presented a valid
	// pass (followpass.go), until when: many more than the admitted.
	followers map[peer.ID]time.Time
	// revoked are the followers an operator revoked (revoke.go), from the
	// replicated list: never admitted, on any protocol but memberProtocol
	// (where they hear why).
	revoked map[peer.ID]bool
}

// maxFollowers bounds the admitted followers: a pass costs its holder a
// member's signature, so only the cluster's own nodes fill it.
const maxFollowers = 1 << 16

// admissionTTL is how long an admitted peer may open streams without being
// a member; a joiner learns the configuration well within it.
const admissionTTL = 5 * time.Minute

// maxAdmitted bounds the admitted set (it only grows from this node's own
// --join targets and the peers they name).
const maxAdmitted = 256

func newPeerGate() *peerGate {
	return &peerGate{admitted: map[peer.ID]time.Time{}, followers: map[peer.ID]time.Time{}, unknownRaft: make(chan peer.ID, 16)}
}

// allow is the p2p.Authorizer of the node's host.
func (g *peerGate) allow(p peer.ID, proto protocol.ID) bool {
	switch proto {
	case memberProtocol:
		return true
	}
	if g.isRevoked(p) {
		return false
	}
	switch proto {
	case helloProtocol:
		if g.helloOpen || !g.configured() {
			return true
		}
	}
	if g.isMember(p) || g.isAdmitted(p) {
		return true
	}
	// A follower of the metadata is no Raft peer: it never votes nor
	// sends entries, so its pass does not open Raft.
	if proto != p2p.RaftProtocol && g.isFollower(p) {
		return true
	}
	if proto == p2p.RaftProtocol {
		select {
		case g.unknownRaft <- p:
		default: // the voucher is busy: the peer's Raft retries come back
		}
	}
	return false
}

// isMember reports whether p is a server of the latest Raft configuration.
func (g *peerGate) isMember(p peer.ID) bool {
	meta := g.meta.Load()
	if meta == nil {
		return false
	}
	members, err := (*meta).Members()
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
	members, err := (*meta).Members()
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
	if g.revoked[p] {
		return
	}
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

// admitFollower lets follower p (it presented a valid pass) open streams
// for ttl. Past maxFollowers, expired entries make room, else p waits for
// its next presentation.
func (g *peerGate) admitFollower(p peer.ID, ttl time.Duration) {
	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.revoked[p] {
		return
	}
	if _, known := g.followers[p]; !known && len(g.followers) >= maxFollowers {
		for q, until := range g.followers {
			if now.After(until) {
				delete(g.followers, q)
			}
		}
		if len(g.followers) >= maxFollowers {
			return
		}
	}
	g.followers[p] = now.Add(ttl)
}

// admittedFollowers are the followers admitted now (their pass presented
// within followerAdmission), in no order.
func (g *peerGate) admittedFollowers(now time.Time) []peer.ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]peer.ID, 0, len(g.followers))
	for p, until := range g.followers {
		if now.Before(until) {
			out = append(out, p)
		}
	}
	return out
}

// isFollower reports whether p is a follower admitted by its pass.
func (g *peerGate) isFollower(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	until, ok := g.followers[p]
	if ok && time.Now().After(until) {
		delete(g.followers, p)
		return false
	}
	return ok
}

// setRevoked replaces the revoked followers and drops at once whatever
// admission they held (a pass presented, a join or bootstrap admission).
func (g *peerGate) setRevoked(revoked map[peer.ID]bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.revoked = revoked
	for p := range revoked {
		delete(g.followers, p)
		delete(g.admitted, p)
	}
}

// isRevoked reports whether p is a revoked follower.
func (g *peerGate) isRevoked(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.revoked[p]
}

// removed reports whether this node knows a Raft configuration that does
// not name it: it was a member and was removed. A follower of the metadata
// (follow.go) knows a configuration without itself too, by design: it is
// not removed; nor is one that joins again because no member accepts its
// passes any more (rejoinWithoutPass).
func (n *Node) removed() bool {
	return n.gate.configured() && !n.isMember() && !n.following() && !n.join.passesLost() && n.revokedSelf() == nil
}

// noteRemoved logs, once, that this node was removed from the cluster.
func (n *Node) noteRemoved() {
	if !n.removed() {
		n.wasRemoved.Store(false)
		return
	}
	if n.join.removedWhileDown() {
		return // rejoining already (rejoin.go), and says so
	}
	if n.wasRemoved.CompareAndSwap(false, true) {
		n.log.Warn("this node was removed from the cluster: it takes no writes and its Raft state is " +
			n.meta.Status().State.String() + "; restart it with --join <a member> to join again")
	}
}

// vouchProtocol asks a member whether a peer is in its configuration: the
// request is a vouchRequest, the answer a vouchAnswer. Members only.
const vouchProtocol = "/meshreg/vouch/1.0.0"

type vouchRequest struct {
	ID string `json:"id"`
}

type vouchAnswer struct {
	Member bool `json:"member"`
}

func (n *Node) serveVouch(ctx context.Context, from peer.ID, b []byte) []byte {
	var req vouchRequest
	var ans vouchAnswer
	if json.Unmarshal(b, &req) == nil {
		if p, err := peer.Decode(req.ID); err == nil {
			ans.Member = n.isMemberPeer(p)
		}
	}
	out, _ := json.Marshal(ans)
	return out
}

// vouched asks up to three members whether p is in their configuration.
func (n *Node) vouched(ctx context.Context, p peer.ID) (peer.ID, bool) {
	members, err := n.meta.Members()
	if err != nil {
		return "", false
	}
	req, _ := json.Marshal(vouchRequest{ID: p.String()})
	asked := 0
	for _, m := range members {
		if asked == 3 {
			break
		}
		if m.ID == n.host.ID().String() || m.ID == p.String() {
			continue
		}
		id, err := peerOf(n.host, consensus.Server{ID: m.ID, Address: m.Address})
		if err != nil {
			continue
		}
		asked++
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := n.host.Request(rctx, id, vouchProtocol, req, maxControlLen)
		cancel()
		var ans vouchAnswer
		if err == nil && json.Unmarshal(resp, &ans) == nil && ans.Member {
			return id, true
		}
	}
	return "", false
}
