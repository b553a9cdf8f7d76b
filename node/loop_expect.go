package node

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
)

// fleet is the --bootstrap-expect exchange as the expect loop drives it
// (bootstrap.go; *Node): the hellos, the peers they told of, and the join
// that follows when a cluster exists.
type fleet interface {
	// isMember and removed say whether this node is in the configuration
	// it knows, or knows one without itself (it was removed).
	isMember() bool
	removed() bool
	// hello exchanges views with a target (an http(s) URL or a multiaddr).
	hello(ctx context.Context, target string) error
	// seenPeers and addSeen are the peers heard of so far (id → Raft
	// address), this node included.
	seenPeers() map[string]string
	addSeen(peers map[string]string)
	// clusterMember is a member of an existing cluster heard of, if any;
	// bootstrapSet the servers to bootstrap with once this node is the
	// one to (nil until then).
	clusterMember() (id, addr string)
	bootstrapSet() []consensus.Server
	// joinThrough asks targets to add this node until one does.
	joinThrough(ctx context.Context, targets []string)
}

// expectPause is the pause between two rounds of hellos.
const expectPause = 500 * time.Millisecond

// expecter runs the bootstrap of --bootstrap-expect until this node is a
// member of a cluster or ctx ends: it bootstraps one, or joins one that
// exists; then, as a member, it watches for its removal (watch). A node
// restarted as a member (or removed) runs the join loop instead (restart).
type expecter struct {
	expect         int      // --bootstrap-expect
	targets        []string // --join
	self, selfAddr string   // this node's peer id and Raft address
	fleet          fleet
	status         *joinState    // what the node waits for (status, /readyz)
	admit          func(peer.ID) // lets a peer's Raft streams in before it is a member (peerGate)
	bootstrap      func(servers []consensus.Server) error
	restart, watch loop
	log            *slog.Logger
}

func newExpecter(expect int, targets []string, self, selfAddr string, f fleet, status *joinState, admit func(peer.ID),
	bootstrap func(servers []consensus.Server) error, restart, watch loop, log *slog.Logger) *expecter {
	return &expecter{expect: expect, targets: targets, self: self, selfAddr: selfAddr, fleet: f, status: status, admit: admit,
		bootstrap: bootstrap, restart: restart, watch: watch, log: log}
}

func (e *expecter) Run(ctx context.Context) error {
	if e.fleet.isMember() || e.fleet.removed() {
		// Restarted: the join loop checks that it still is a member (or
		// joins again), and tells the leader a new address.
		return e.restart.Run(ctx)
	}
	e.fleet.addSeen(map[string]string{e.self: e.selfAddr})
	waiting := "waiting for peers before bootstrapping (--bootstrap-expect " + strconv.Itoa(e.expect) +
		") or for a member of an existing cluster, through --join " + strings.Join(e.targets, ", ")
	e.status.wait(waiting)
	start := time.Now()
	for attempt := 1; !e.fleet.isMember(); attempt++ {
		for _, target := range e.targets {
			// Peers starting together miss each other at first: a target
			// that still fails after expectQuiet is worth a warning.
			if err := e.fleet.hello(ctx, target); err != nil && time.Since(start) > expectQuiet {
				e.status.failed(e.log, target, err, expectPause)
			}
		}
		for id, addr := range e.fleet.seenPeers() {
			if id != e.self {
				e.fleet.hello(ctx, addr)
			}
		}
		seen := e.fleet.seenPeers()
		// The one that bootstraps sends the others the log before they
		// know the configuration (see peerGate).
		for id := range seen {
			if p, err := peer.Decode(id); err == nil && id != e.self {
				e.admit(p)
			}
		}
		if id, addr := e.fleet.clusterMember(); id != "" {
			e.log.Info("found an existing cluster: joining it instead of bootstrapping", "member", id, "expect", e.expect)
			e.fleet.joinThrough(ctx, append([]string{addr}, e.targets...))
			return e.watch.Run(ctx)
		}
		if servers := e.fleet.bootstrapSet(); servers != nil {
			if err := e.bootstrap(servers); err != nil {
				e.log.Error("bootstrap failed", "err", err)
			} else {
				e.log.Info("bootstrapped the cluster: this node has the lowest peer id", "servers", len(servers))
			}
			e.status.done()
			return e.watch.Run(ctx)
		}
		e.status.setWaiting(waiting + "; seen " + strconv.Itoa(len(seen)) + " (this one included)")
		if attempt%10 == 1 {
			e.log.Info("waiting for peers before bootstrapping", "seen", len(seen), "expect", e.expect)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(expectPause):
		}
	}
	e.status.done()
	return e.watch.Run(ctx)
}
