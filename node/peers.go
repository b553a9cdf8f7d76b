package node

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
)

// infoProtocol asks a peer for its locality labels; the answer is a
// peerLabels. The round trip also measures the latency to the peer.
const infoProtocol = "/meshreg/info/1.0.0"

// penaltyTime is how long a peer that sent bytes not matching a digest is
// tried last.
const penaltyTime = 10 * time.Minute

// peerLabels say where a node runs (--region, --zone).
type peerLabels struct {
	Region string `json:"region,omitempty"`
	Zone   string `json:"zone,omitempty"`
}

// peerBook is what this node knows about other nodes as sources of blobs:
// where they are, how far away, and which ones lied.
type peerBook struct {
	self peerLabels

	mu        sync.Mutex
	labels    map[peer.ID]peerLabels
	rtt       map[peer.ID]time.Duration
	penalised map[peer.ID]time.Time // until when
}

func newPeerBook(self peerLabels) *peerBook {
	return &peerBook{self: self, labels: map[peer.ID]peerLabels{}, rtt: map[peer.ID]time.Duration{}, penalised: map[peer.ID]time.Time{}}
}

func (b *peerBook) learn(p peer.ID, l peerLabels, rtt time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.labels[p] = l
	if old, ok := b.rtt[p]; ok {
		rtt = (old*3 + rtt) / 4
	}
	b.rtt[p] = rtt
}

func (b *peerBook) known(p peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.labels[p]
	return ok
}

func (b *peerBook) penalise(p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.penalised[p] = time.Now().Add(penaltyTime)
}

// PeerStatus is what a node knows of another node as a source of blobs.
type PeerStatus struct {
	ID     string  `json:"id"`
	Region string  `json:"region,omitempty"`
	Zone   string  `json:"zone,omitempty"`
	RTTMs  float64 `json:"rtt_ms"` // smoothed round trip of control requests
	// PenalisedUntil is set while the peer is tried last for having sent
	// bytes that did not match a digest.
	PenalisedUntil *time.Time `json:"penalised_until,omitempty"`
}

// snapshot lists what the book knows, by peer id, for the status.
func (b *peerBook) snapshot() []PeerStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	ids := map[peer.ID]bool{}
	for p := range b.labels {
		ids[p] = true
	}
	for p := range b.penalised {
		ids[p] = true
	}
	out := []PeerStatus{}
	for p := range ids {
		l := b.labels[p]
		ps := PeerStatus{ID: p.String(), Region: l.Region, Zone: l.Zone,
			RTTMs: float64(b.rtt[p].Microseconds()) / 1000}
		if until, ok := b.penalised[p]; ok && now.Before(until) {
			ps.PenalisedUntil = &until
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(x, y PeerStatus) int { return cmp.Compare(x.ID, y.ID) })
	return out
}

// distance ranks a peer as a source, lowest first: same zone (in the same
// region), then same region, then anywhere; within a rank by measured
// round-trip time. Penalised peers come after all others; peers never
// heard from before them.
func (b *peerBook) distance(p peer.ID, now time.Time) (rank int, rtt time.Duration) {
	l, ok := b.labels[p]
	rtt, measured := b.rtt[p]
	switch {
	case now.Before(b.penalised[p]):
		rank = 4
	case !ok:
		rank = 3
	case b.self.Region == l.Region && b.self.Zone == l.Zone:
		rank = 0
	case b.self.Region == l.Region:
		rank = 1
	default:
		rank = 2
	}
	if !measured {
		rtt = time.Hour
	}
	return rank, rtt
}

// nearestFirst sorts peers by distance, keeping the given order among
// equals.
func (b *peerBook) nearestFirst(peers []peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	slices.SortStableFunc(peers, func(x, y peer.ID) int {
		rx, tx := b.distance(x, now)
		ry, ty := b.distance(y, now)
		return cmp.Or(cmp.Compare(rx, ry), cmp.Compare(tx, ty))
	})
}

// serveInfo answers infoProtocol with this node's labels.
func (n *Node) serveInfo(ctx context.Context, from peer.ID, _ []byte) []byte {
	b, _ := json.Marshal(n.peers.self)
	return b
}

// askInfo learns a peer's labels and measures the round trip.
func (n *Node) askInfo(ctx context.Context, p peer.ID) error {
	start := time.Now()
	resp, err := n.host.Request(ctx, p, infoProtocol, nil, maxControlLen)
	if err != nil {
		return err
	}
	var l peerLabels
	if err := json.Unmarshal(resp, &l); err != nil {
		return err
	}
	n.peers.learn(p, l, time.Since(start))
	return nil
}

// livePeers are the other cluster members this node is connected to: the
// nodes that can hold and serve copies of blobs right now.
func (n *Node) livePeers() []peer.ID {
	members, err := n.meta.Members()
	if err != nil {
		return nil
	}
	var live []peer.ID
	for _, m := range members {
		if m.ID == n.host.ID().String() || !n.connected(m.ID) {
			continue
		}
		if id, err := peer.Decode(m.ID); err == nil {
			live = append(live, id)
		}
	}
	return live
}

// isMemberPeer reports whether p is in the cluster's configuration.
func (n *Node) isMemberPeer(p peer.ID) bool {
	members, err := n.meta.Members()
	if err != nil {
		return false
	}
	for _, m := range members {
		if m.ID == p.String() {
			return true
		}
	}
	return false
}

// meshLoop keeps this node connected to every member, not only to the
// leader as Raft would: blobs move between any two nodes, and the DHT's
// routing table fills from these connections. It also refreshes what the
// node knows of each member's labels and latency.
func (n *Node) meshLoop(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	refreshed := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		members, err := n.meta.Members()
		if err != nil {
			continue
		}
		refresh := time.Since(refreshed) > 30*time.Second
		if refresh {
			refreshed = time.Now()
		}
		var wg sync.WaitGroup
		for _, m := range members {
			if m.ID == n.host.ID().String() {
				continue
			}
			id, err := peerOf(n.host, consensus.Server{ID: m.ID, Address: m.Address})
			if err != nil {
				continue
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				if !n.connected(m.ID) {
					if err := n.host.LibP2P().Connect(ctx, peer.AddrInfo{ID: id}); err != nil {
						return
					}
				}
				if refresh || !n.peers.known(id) {
					if err := n.askInfo(ctx, id); err != nil {
						n.log.Debug("asking a member for its labels failed", "peer", id, "err", err)
					}
				}
			})
		}
		wg.Wait()
	}
}

// spreadFirst orders candidates for a new copy of a blob: peers outside
// this node's zone first (a copy in another zone survives the loss of
// this one), nearest first within each group.
func (b *peerBook) spreadFirst(peers []peer.ID) {
	b.nearestFirst(peers)
	b.mu.Lock()
	defer b.mu.Unlock()
	slices.SortStableFunc(peers, func(x, y peer.ID) int {
		return cmp.Compare(b.sameZone(x), b.sameZone(y))
	})
}

// sameZone is 1 for a peer known to share this node's region and zone.
func (b *peerBook) sameZone(p peer.ID) int {
	if l, ok := b.labels[p]; ok && l == b.self {
		return 1
	}
	return 0
}
