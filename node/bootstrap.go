package node

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
)

// helloProtocol lets nodes that start together (--bootstrap-expect) tell
// each other whom they have seen: the request and the answer are each a
// helloMessage, whose proof admits the sender (hello_admission.go).
const helloProtocol = "/meshreg/hello/1.0.0"

// The deterministic bootstrap of --bootstrap-expect N, as Consul does it:
// every node collects the peers it can reach through --join and what they
// have seen in turn; once a node has seen N (itself included), the one with
// the lowest peer id among them bootstraps a cluster of all of them as
// voters. The others never bootstrap: they become members when that leader
// reaches them. So nodes that name each other form one cluster, not
// several, whatever order they start in.

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

// serveHello records the sender's view and answers with this node's, if
// the sender is admitted (hello_admission.go); otherwise it answers with
// nothing.
func (n *Node) serveHello(ctx context.Context, from peer.ID, b []byte) []byte {
	var theirs helloMessage
	if json.Unmarshal(b, &theirs) != nil || !n.helloAdmitted(theirs, "request", from) {
		n.log.Warn("refused a bootstrap hello from a peer without the cluster key or the same --join-token", "from", from)
		out, _ := json.Marshal(helloMessage{})
		return out
	}
	n.addSeen(theirs.Seen)
	out, _ := json.Marshal(n.signHello(helloMessage{Seen: n.seenPeers()}, "answer", from))
	return out
}

// expectLoop runs the bootstrap of --bootstrap-expect until this node is a
// member of a cluster or ctx ends.
func (n *Node) expectLoop(ctx context.Context) {
	self := n.host.ID().String()
	n.addSeen(map[string]string{self: n.host.RaftAddress()})
	for attempt := 1; !n.isMember(); attempt++ {
		for _, target := range n.cfg.Join {
			n.hello(ctx, target)
		}
		for id, addr := range n.seenPeers() {
			if id != self {
				n.hello(ctx, addr)
			}
		}
		seen := n.seenPeers()
		// The one that bootstraps sends the others the log before they
		// know the configuration (see peerGate).
		for id := range seen {
			if p, err := peer.Decode(id); err == nil && id != self {
				n.gate.admit(p, admissionTTL)
			}
		}
		if len(seen) >= n.cfg.BootstrapExpect {
			ids := slices.Sorted(maps.Keys(seen))
			if ids[0] == self {
				var servers []consensus.Server
				for _, id := range ids {
					servers = append(servers, consensus.Server{ID: id, Address: seen[id]})
				}
				if err := n.meta.BootstrapWith(servers); err != nil {
					n.log.Error("bootstrap failed", "err", err)
				} else {
					n.log.Info("bootstrapped the cluster: this node has the lowest peer id", "servers", len(servers))
				}
				return
			}
		}
		if attempt%10 == 1 {
			n.log.Info("waiting for peers before bootstrapping", "seen", len(seen), "expect", n.cfg.BootstrapExpect)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// hello exchanges views with target (an http(s) URL or a multiaddr).
func (n *Node) hello(ctx context.Context, target string) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	addr := target
	if strings.HasPrefix(target, "http://") || strings.HasPrefix(target, "https://") {
		var err error
		if addr, err = raftAddressOf(ctx, target); err != nil {
			n.log.Debug("bootstrap: peer not reachable yet", "target", target, "err", err)
			return
		}
	}
	if err := n.host.Connect(ctx, addr); err != nil {
		n.log.Debug("bootstrap: peer not reachable yet", "target", target, "err", err)
		return
	}
	id, err := peerOf(n.host, consensus.Server{Address: addr})
	if err != nil || id == n.host.ID() {
		return
	}
	req, _ := json.Marshal(n.signHello(helloMessage{Seen: n.seenPeers()}, "request", id))
	resp, err := n.host.Request(ctx, id, helloProtocol, req, maxControlLen)
	if err != nil {
		return
	}
	var theirs helloMessage
	if json.Unmarshal(resp, &theirs) != nil || !n.helloAdmitted(theirs, "answer", id) {
		n.log.Warn("bootstrap: ignoring the answer of a peer without the cluster key or the same --join-token", "peer", id)
		return
	}
	n.addSeen(theirs.Seen)
}
