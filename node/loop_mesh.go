package node

import (
	"context"
	"time"
)

// mesher keeps this node connected to every member, not only to the
// leader as Raft would: blobs move between any two nodes, and the DHT's
// routing table fills from these connections. Each round (meshRound in
// peers.go) also asks each member for its labels and load, which measures
// the round trip and tells which members answer (livePeers).
type mesher struct {
	every time.Duration
	round func(ctx context.Context)
}

func newMesher(every time.Duration, round func(context.Context)) *mesher {
	return &mesher{every: every, round: round}
}

// Run runs a round at once, then one every interval; a round longer than
// the interval delays the next, it does not pile rounds up.
func (m *mesher) Run(ctx context.Context) error {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		m.round(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
