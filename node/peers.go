package node

import (
	"cmp"
	"context"
	"encoding/json"
	"math"
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

// infoAnswer is the answer on infoProtocol.
type infoAnswer struct {
	peerLabels
	// Load is the node's recent upload to peers (see uploadLoad).
	Load float64 `json:"load"`
}

// peerBook is what this node knows about other nodes as sources of blobs:
// where they are, how far away, and which ones lied.
type peerBook struct {
	self peerLabels

	mu        sync.Mutex
	labels    map[peer.ID]peerLabels
	rtt       map[peer.ID]time.Duration
	heard     map[peer.ID]time.Time // last answer
	penalised map[peer.ID]time.Time // until when
	live      time.Duration         // the live window (see meshPick); 0: liveWindow
	meshNext  int                   // where the mesh's next turn starts
}

func newPeerBook(self peerLabels) *peerBook {
	return &peerBook{self: self, labels: map[peer.ID]peerLabels{}, rtt: map[peer.ID]time.Duration{},
		heard: map[peer.ID]time.Time{}, penalised: map[peer.ID]time.Time{}}
}

func (b *peerBook) learn(p peer.ID, l peerLabels, rtt time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.labels[p] = l
	b.heard[p] = time.Now()
	if old, ok := b.rtt[p]; ok {
		rtt = (old*3 + rtt) / 4
	}
	b.rtt[p] = rtt
}

// place records where p runs, as p said in an answer that measured no
// round trip (a health check).
func (b *peerBook) place(p peer.ID, l peerLabels) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.labels[p] = l
}

// labelsOf is where the member id runs, as far as this node knows (the zero
// labels when it does not).
func (b *peerBook) labelsOf(id string) peerLabels {
	p, err := peer.Decode(id)
	if err != nil {
		return peerLabels{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.labels[p]
}

// answered reports whether p answered within the live window.
func (b *peerBook) answered(p peer.ID, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return now.Sub(b.heard[p]) < b.windowLocked()
}

// window is how recently a member must have answered to count as live:
// liveWindow while the mesh asks every member each round, else three
// times the rounds it takes to ask them all (see meshPick).
func (b *peerBook) window() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.windowLocked()
}

func (b *peerBook) windowLocked() time.Duration {
	return max(b.live, liveWindow)
}

// meshPick returns the members (other than this node) the mesh asks this
// round: all of them when there are at most meshSample, else meshSample of
// them, the next in turn, so that a node's idle cost does not grow with
// the cluster. It sets the live window to three turns.
func (b *peerBook) meshPick(others []string) []string {
	return b.meshPickN(others, meshSample)
}

// meshPickN is meshPick asking at most sample members a round.
func (b *peerBook) meshPickN(others []string, sample int) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(others) <= sample {
		b.live = 0
		return others
	}
	turns := (len(others) + sample - 1) / sample
	b.live = 3 * time.Duration(turns) * meshEvery
	pick := make([]string, 0, sample)
	start := b.meshNext % len(others)
	for i := range sample {
		pick = append(pick, others[(start+i)%len(others)])
	}
	b.meshNext = (start + sample) % len(others)
	return pick
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
// heard from, or not lately, before them.
func (b *peerBook) distance(p peer.ID, now time.Time) (rank int, rtt time.Duration) {
	l, ok := b.labels[p]
	rtt, measured := b.rtt[p]
	switch {
	case now.Before(b.penalised[p]):
		rank = 4
	case !ok || now.Sub(b.heard[p]) >= b.windowLocked():
		// Never heard from, or silent lately (down, or cut off).
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

// nearestGroup is how many peers at the front of peers (sorted by
// nearestFirst) share the first one's rank.
func (b *peerBook) nearestGroup(peers []peer.ID) int {
	if len(peers) == 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	first, _ := b.distance(peers[0], now)
	for i, p := range peers {
		if r, _ := b.distance(p, now); r != first {
			return i
		}
	}
	return len(peers)
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

// serveInfo answers infoProtocol with this node's labels and load.
func (n *Node) serveInfo(ctx context.Context, from peer.ID, _ []byte) []byte {
	b, _ := json.Marshal(infoAnswer{peerLabels: n.peers.self, Load: n.load.value(time.Now())})
	return b
}

// askInfo learns a peer's labels and measures the round trip; it returns
// the peer's load.
func (n *Node) askInfo(ctx context.Context, p peer.ID) (float64, error) {
	start := time.Now()
	resp, err := n.host.Request(ctx, p, infoProtocol, nil, maxControlLen)
	if err != nil {
		return 0, err
	}
	var a infoAnswer
	if err := json.Unmarshal(resp, &a); err != nil {
		return 0, err
	}
	n.peers.learn(p, a.peerLabels, time.Since(start))
	return a.Load, nil
}

// leastLoadedFirst reorders the nearest group of peers (those as near as
// the first, which nearestFirst put in front) by how much each sent to
// peers lately, asking them; the rest keep their order. It costs one round
// trip to the nearest peers, bounded by a short timeout.
func (n *Node) leastLoadedFirst(ctx context.Context, peers []peer.ID) {
	group := n.peers.nearestGroup(peers)
	if group < 2 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	loads := make(map[peer.ID]float64, group)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers[:group] {
		wg.Go(func() {
			load, err := n.askInfo(ctx, p)
			if err != nil {
				load = math.Inf(1) // did not answer: try it last in the group
			}
			mu.Lock()
			loads[p] = load
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortStableFunc(peers[:group], func(x, y peer.ID) int { return cmp.Compare(loads[x], loads[y]) })
}

// livePeers are the other cluster members this node is connected to and
// that answered lately (see liveWindow): the nodes that can hold and serve
// copies of blobs right now. A connected member not heard from lately (one
// that just joined, or one cut off) is asked at once, for at most a second.
func (n *Node) livePeers() []peer.ID {
	members, err := n.meta.Members()
	if err != nil {
		return nil
	}
	now := time.Now()
	var (
		mu   sync.Mutex
		live []peer.ID
		wg   sync.WaitGroup
	)
	for _, m := range members {
		if m.ID == n.host.ID().String() || !n.connected(m.ID) {
			continue
		}
		id, err := peer.Decode(m.ID)
		if err != nil {
			continue
		}
		if n.peers.answered(id, now) {
			live = append(live, id)
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(n.ctx, time.Second)
			defer cancel()
			if _, err := n.askInfo(ctx, id); err == nil {
				mu.Lock()
				live = append(live, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return live
}

// isClusterPeer reports whether p may use this node's services to peers
// (blobs, has, replicate, origin fetches): a member, or a follower of the
// metadata that presented its pass here (followpass.go). Followers hold
// and fetch blobs like members; they are only not in the Raft
// configuration.
func (n *Node) isClusterPeer(p peer.ID) bool {
	return n.isMemberPeer(p) || n.gate.isFollower(p)
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

// meshEvery is how often the mesh (mesher) runs a round.
const meshEvery = time.Second

// meshSample is how many members a mesh round asks at most (see meshPick):
// in a cluster of up to meshSample+1 nodes, every member every round.
// followerMeshSample is the same on a follower of the metadata: followers
// are many and the members few, so each asks one member a round (a
// member then answers about followers/members requests a second, not 8
// times as many).
const (
	meshSample         = 8
	followerMeshSample = 1
)

// liveWindow is how recently a member must have answered to count as live,
// in a cluster whose members the mesh asks every round (a larger one waits
// longer: peerBook.window): a libp2p connection cut by a partition can look
// open for a long while, so an answer, not a connection, says a member can
// take a copy of a blob.
const liveWindow = 3 * meshEvery

// meshRound is one round of the mesh (mesher, loop_mesh.go): it connects
// to every member this node is not connected to, asks those whose turn it
// is (meshPick: all of them in a small cluster) for their labels and load,
// and offers those that answer to the DHT.
func (n *Node) meshRound(ctx context.Context) {
	members, err := n.meta.Members()
	if err != nil {
		members = nil
	}
	var others []string
	addrs := map[string]string{}
	for _, m := range members {
		if m.ID != n.host.ID().String() {
			others = append(others, m.ID)
			addrs[m.ID] = m.Address
		}
	}
	ask := map[string]bool{}
	sample := meshSample
	if n.following() {
		sample = followerMeshSample
	}
	for _, id := range n.peers.meshPickN(others, sample) {
		ask[id] = true
	}
	var wg sync.WaitGroup
	for _, mid := range others {
		if !ask[mid] && n.connected(mid) {
			continue
		}
		id, err := peerOf(n.host, consensus.Server{ID: mid, Address: addrs[mid]})
		if err != nil {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if !n.connected(mid) {
				if err := n.host.Dial(ctx, id); err != nil {
					return
				}
			}
			if !ask[mid] {
				return
			}
			if _, err := n.askInfo(ctx, id); err != nil {
				n.log.Debug("a member did not answer", "peer", id, "err", err)
				return
			}
			n.routing.AddPeer(id)
		})
	}
	wg.Wait()
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

// apart reports whether p and q are known to run in different places
// (region or zone).
func (b *peerBook) apart(p, q peer.ID) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	lp, okp := b.labels[p]
	lq, okq := b.labels[q]
	return okp && okq && lp != lq
}

// sameZone is 1 for a peer known to share this node's region and zone.
func (b *peerBook) sameZone(p peer.ID) int {
	if l, ok := b.labels[p]; ok && l == b.self {
		return 1
	}
	return 0
}
