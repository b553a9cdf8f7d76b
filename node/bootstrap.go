package node

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
)

// helloProtocol lets nodes that start together (--bootstrap-expect) tell
// each other whom they have seen: the request and the answer are each a
// helloMessage, whose proof admits the sender (hello_admission.go).
const helloProtocol = "/meshreg/hello/1.0.0"

// The deterministic bootstrap of --bootstrap-expect N, as Consul does it,
// made safe for nodes that start later or more than N at once:
//
//   - Every node collects the peers it can reach through --join and what
//     they have seen in turn, and tells in each hello whether it is a member
//     of a cluster.
//   - A node that hears from a member joins that cluster (as a non-voter,
//     like any joiner; the shared secret or cluster key admits it), whatever
//     --bootstrap-expect says: bootstrap-expect is for the first start of a
//     fleet only. A DaemonSet on a new host, started with the same arguments
//     as the first ones, thus joins.
//   - Otherwise the node with the lowest peer id among those it heard from
//     lately (within promiseTTL: a node seen once and gone does not hold the
//     others up) bootstraps, once N nodes (itself included) have promised
//     it: a node promises the lowest such id (not itself), says so in its
//     hellos, and keeps that promise for promiseTTL, renewed while that id
//     stays the lowest it hears from. It never promises two nodes at once,
//     and a node that holds a promise to another never bootstraps. The
//     bootstrapper makes a cluster of itself and the N-1 lowest of the
//     nodes that promised it lately (promiseFresh), all voters; the rest
//     (more than N started at once) see the members and join. Two
//     bootstraps would need two sets of N promised nodes: among fewer than
//     2N nodes they share one, which promised only one of them.
//   - A node releases its promise early when the peer it promised says it
//     promised another for long enough (releaseMargin): that peer cannot
//     bootstrap before its own promise expires, by when it no longer counts
//     the released promise (it counts only promises heard within
//     promiseFresh, and a hello takes at most helloTimeout).
//
// So nodes that name each other form one cluster, not several, whatever
// order they start in. (A promise expires after promiseTTL: a bootstrapper
// that takes longer than that to bring its cluster up, cut off from the
// nodes that promised it, could let them promise another.)

// promiseTTL is how long a promise holds without renewal; a bootstrapper
// counts a promise it heard of within promiseFresh, so that it still holds
// when the bootstrapper's configuration reaches the promising node.
const (
	promiseTTL    = 10 * time.Second
	promiseFresh  = 3 * time.Second
	helloTimeout  = 3 * time.Second
	releaseMargin = promiseFresh + helloTimeout + time.Second
)

// expectQuiet is how long a --bootstrap-expect node tolerates unreachable
// --join targets before it reports them (peers start at different times).
const expectQuiet = 10 * time.Second

// bootState is a node's side of the --bootstrap-expect exchange.
type bootState struct {
	mu sync.Mutex
	// promisedTo is the peer this node promised, until promisedUntil.
	promisedTo    string
	promisedUntil time.Time
	// promisedMe maps the peers that said they promised this node to when
	// it last heard so.
	promisedMe map[string]time.Time
	// bootstrapping is set once this node decided to bootstrap.
	bootstrapping bool
	// member is a peer that said it is a member of a cluster ("" if none).
	member string
	// heard maps the peers this node exchanged admitted hellos with to
	// when it last did.
	heard map[string]time.Time
	// lastRefusalLog and refusedSince rate-limit the log of refused hellos.
	lastRefusalLog time.Time
	refusedSince   int
}

// refusalLogEvery is how often a refused hello is logged at most: hello
// is open to anyone on a fleet with a shared --join-token, so strangers
// must not flood the log.
const refusalLogEvery = time.Minute

// refusal counts a refused hello and reports whether to log it now, with
// how many went unlogged since the last line.
func (b *bootState) refusal(now time.Time) (more int, log bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.lastRefusalLog.IsZero() && now.Sub(b.lastRefusalLog) < refusalLogEvery {
		b.refusedSince++
		return 0, false
	}
	more, b.refusedSince, b.lastRefusalLog = b.refusedSince, 0, now
	return more, true
}

// lowestLive is the lowest of this node's id and those it heard from
// within promiseTTL. Called with b.mu held.
func (b *bootState) lowestLive(self string, now time.Time) string {
	lowest := self
	for id, at := range b.heard {
		if now.Sub(at) < promiseTTL {
			lowest = min(lowest, id)
		}
	}
	return lowest
}

// seenPeers is what a node has learned for the bootstrap.
func (n *Node) seenPeers() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.seen)
}

func (n *Node) addSeen(peers map[string]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, addr := range peers {
		if _, err := peer.Decode(id); err == nil && strings.HasSuffix(addr, "/p2p/"+id) {
			n.seen[id] = addr
		}
	}
}

// heard records an admitted hello message from peer from: whom it has
// seen, whether it promised this node, whether it is a member.
func (n *Node) heard(from peer.ID, msg helloMessage) {
	n.addSeen(msg.Seen)
	b := &n.boot
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.promisedMe == nil {
		b.promisedMe, b.heard = map[string]time.Time{}, map[string]time.Time{}
	}
	now := time.Now()
	b.heard[from.String()] = now
	if msg.Promised == n.host.ID().String() {
		b.promisedMe[from.String()] = now
	} else {
		delete(b.promisedMe, from.String())
	}
	if b.promisedTo == from.String() && msg.Promised != "" && msg.Promised != from.String() &&
		time.Duration(msg.PromisedMs)*time.Millisecond >= releaseMargin {
		b.promisedTo = "" // it promised another: it will not bootstrap for a while
	}
	if msg.Member && b.member == "" {
		b.member = from.String()
	}
}

// helloFor is this node's hello message (request or answer): whom it has
// seen, whether it is a member, and whom it promised (renewing the promise
// while that peer is the lowest id it knows).
func (n *Node) helloFor() helloMessage {
	seen := n.seenPeers()
	// A follower of the metadata is in the cluster too: a late node that
	// hears from it joins (through it: it passes the join on to the
	// leader) rather than bootstrap a second cluster.
	msg := helloMessage{Seen: seen, Member: n.isMember() || n.following()}
	b := &n.boot
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if msg.Member || b.bootstrapping || b.member != "" {
		return msg
	}
	live := b.promisedTo != "" && now.Before(b.promisedUntil)
	self := n.host.ID().String()
	lowest := b.lowestLive(self, now)
	switch {
	case lowest != self && (!live || b.promisedTo == lowest):
		b.promisedTo, b.promisedUntil = lowest, now.Add(promiseTTL)
		msg.Promised, msg.PromisedMs = lowest, promiseTTL.Milliseconds()
	case live:
		msg.Promised, msg.PromisedMs = b.promisedTo, b.promisedUntil.Sub(now).Milliseconds()
	}
	return msg
}

// bootstrapSet returns the servers this node bootstraps with, once it is
// the lowest id it has seen, holds no promise to another, and enough peers
// promised it; nil otherwise. It returns a set at most once.
func (n *Node) bootstrapSet() []consensus.Server {
	seen := n.seenPeers()
	self := n.host.ID().String()
	ids := slices.Sorted(maps.Keys(seen))
	b := &n.boot
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if len(ids) < n.cfg.BootstrapExpect || b.lowestLive(self, now) != self {
		return nil
	}
	if b.bootstrapping || b.member != "" || (b.promisedTo != "" && b.promisedTo != self && now.Before(b.promisedUntil)) {
		return nil
	}
	servers := []consensus.Server{{ID: self, Address: seen[self]}}
	for _, id := range ids {
		if len(servers) == n.cfg.BootstrapExpect {
			break
		}
		if at, ok := b.promisedMe[id]; ok && id != self && now.Sub(at) < promiseFresh {
			servers = append(servers, consensus.Server{ID: id, Address: seen[id]})
		}
	}
	if len(servers) < n.cfg.BootstrapExpect {
		return nil
	}
	b.bootstrapping = true
	return servers
}

// clusterMember is a peer that said it is a member of a cluster, with its
// address, or "" if none did.
func (n *Node) clusterMember() (id, addr string) {
	n.boot.mu.Lock()
	id = n.boot.member
	n.boot.mu.Unlock()
	if id == "" {
		return "", ""
	}
	return id, n.seenPeers()[id]
}

// serveHello records the sender's view and answers with this node's, if
// the sender is admitted (hello_admission.go); otherwise it answers with
// nothing.
func (n *Node) serveHello(ctx context.Context, from peer.ID, b []byte) []byte {
	var theirs helloMessage
	if json.Unmarshal(b, &theirs) != nil || !n.helloAdmitted(theirs, "request", from) {
		if more, ok := n.boot.refusal(time.Now()); ok {
			n.log.Warn("refused a bootstrap hello from a peer without the cluster key or the same --join-token",
				"from", from, "more_refused_since_last_line", more)
		}
		out, _ := json.Marshal(helloMessage{})
		return out
	}
	n.heard(from, theirs)
	out, _ := json.Marshal(n.signHello(n.helloFor(), "answer", from))
	return out
}

// hello exchanges views with target (an http(s) URL or a multiaddr). The
// error says why no view came back.
func (n *Node) hello(ctx context.Context, target string) error {
	ctx, cancel := context.WithTimeout(ctx, helloTimeout)
	defer cancel()
	addr := target
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		var err error
		if addr, err = n.raftAddressOf(ctx, target); err != nil {
			n.log.Debug("bootstrap: peer not reachable yet", "target", target, "err", err)
			return err
		}
	}
	if err := n.host.Connect(ctx, addr); err != nil {
		n.log.Debug("bootstrap: peer not reachable yet", "target", target, "err", err)
		return explainConnect(err)
	}
	id, err := peerOf(n.host, consensus.Server{Address: addr})
	if err != nil || id == n.host.ID() {
		return err // nil for this node itself (a --join list naming all)
	}
	req, _ := json.Marshal(n.signHello(n.helloFor(), "request", id))
	resp, err := n.host.Request(ctx, id, helloProtocol, req, maxControlLen)
	if err != nil {
		return err
	}
	var theirs helloMessage
	if json.Unmarshal(resp, &theirs) != nil || !n.helloAdmitted(theirs, "answer", id) {
		n.log.Warn("bootstrap: ignoring the answer of a peer without the cluster key or the same --join-token", "peer", id)
		return errors.New("peer " + id.String() + " answered without proof of the cluster key or the same --join-token")
	}
	n.heard(id, theirs)
	return nil
}
