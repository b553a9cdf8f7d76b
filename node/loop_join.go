package node

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"
)

// joiner is the join loop of a node started with --join: it asks the
// targets, in turn, to add this node until one does or ctx ends (join,
// Node.joinOnce). A restarted member asks again only if its Raft address
// changed (a new IP or port): the leader then records the new address and
// keeps its suffrage; or if the cluster removed it while it was down
// (rejoin.go): it then joins again as a non-voter. Otherwise a node that
// already is a member does not ask again.
//
// Then, as a member, it watches for a removal it misses while running
// (watch, loop_removal.go).
type joiner struct {
	targets []string // --join; none: the loop has nothing to do
	join    func(ctx context.Context)
	watch   loop
}

func newJoiner(targets []string, join func(ctx context.Context), watch loop) *joiner {
	return &joiner{targets: targets, join: join, watch: watch}
}

func (j *joiner) Run(ctx context.Context) error {
	if len(j.targets) > 0 {
		j.join(ctx)
	}
	// Without --join (the node that bootstrapped) the watch still finds
	// out, by asking the other members, that this node was removed.
	return j.watch.Run(ctx)
}

// joining returns the loop that makes this node a member and keeps it one:
// the --bootstrap-expect exchange (loop_expect.go) or the join loop.
func (n *Node) joining() loop {
	watch := newRemovalWatch(n.meta, n.isMember, n.checkRound, func(ctx context.Context) {
		if len(n.cfg.Join) > 0 {
			n.joinThrough(ctx, n.cfg.Join)
		}
	})
	join := newJoiner(n.cfg.Join, n.joinOnce, watch)
	if n.cfg.BootstrapExpect <= 1 {
		return join
	}
	return newExpecter(n.cfg.BootstrapExpect, n.cfg.Join, n.host.ID().String(), n.host.RaftAddress(), n, &n.join,
		func(p peer.ID) { n.gate.admit(p, admissionTTL) }, n.meta.BootstrapWith, join, watch, n.log)
}
