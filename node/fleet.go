package node

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/consensus"
)

// The fleet: every node of the cluster, members and followers of the
// metadata. No node knows the followers from the log (they are in no
// configuration), but each member knows those it serves a tail to
// (tailClients), and every follower presents its pass to every member
// every passRefresh (followpass.go), so each member also knows the
// followers it admitted in the last followerAdmission, tail or not. The
// fleet view asks every member for both on fleetProtocol. It feeds GET
// /_meshreg/v1/nodes (`meshreg cluster nodes`) and the upgrade gate
// (features.go): followers apply every entry too, so a newer op waits for
// them as for the members.
//
// A member that cannot be asked hides no follower the others admitted: a
// follower that reached none of them in followerAdmission is the one the
// view cannot see. Such a follower, if older, stops at the first entry it
// cannot apply (consensus.ErrOlderThanCluster) instead of parting from the
// cluster silently. The view is partial (and the gate fails closed) when
// no member answered or an answer had to leave admitted followers out.

// fleetProtocol asks a node for itself and the followers it serves a tail
// to: an empty request, a fleetAnswer (JSON) of at most maxFleetAnswer
// bytes. The gate lets members and admitted peers open it (followers
// included: any node can show the fleet).
const fleetProtocol = "/meshreg/fleet/1.0.0"

const (
	// maxTailClients bounds the followers one member serves at once; one
	// past it is refused with a reason and tails another member.
	maxTailClients = 1024
	// maxFleetAdmitted bounds the admitted followers one answer lists
	// (beyond, the answer says it left some out).
	maxFleetAdmitted = 8192
	// maxFleetAnswer bounds a fleetAnswer: maxTailClients followers of
	// well under 1 KiB each and maxFleetAdmitted of about 150 bytes.
	maxFleetAnswer = 4 << 20
	// maxFleetField bounds each text field a peer sends in a fleetAnswer.
	maxFleetField = 256
	// fleetTTL is how long a fleet view is reused (the upgrade gate asks
	// for one before each gated write).
	fleetTTL = 3 * time.Second
	// fleetAskTimeout bounds asking all the members.
	fleetAskTimeout = 3 * time.Second
)

// FleetNode is one node of the fleet view.
type FleetNode struct {
	ID string `json:"id"`
	// Role is "leader", "voter", "non-voter" or "follower" ("" for a
	// member that could not be asked and is no voter, or a node that is
	// joining).
	Role string `json:"role"`
	// Agent is the node's libp2p user agent: its version, the newest op
	// and the settings it applies (features.go); Version is the version
	// part of it.
	Agent   string `json:"agent"`
	Version string `json:"version"`
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	// Applied is the raft index the node applied through (for a follower:
	// sent to it through by its member, which it applies in order); Lag is
	// how far that is behind the leader's.
	Applied uint64 `json:"applied"`
	Lag     uint64 `json:"lag"`
	// Source is the member a follower tails from; Since when that tail
	// began.
	Source string    `json:"source,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Fleet is the document served at GET /_meshreg/v1/nodes.
type Fleet struct {
	// At is when the view was taken (it is reused for fleetTTL).
	At time.Time `json:"at"`
	// LeaderIndex is the leader's applied index as it answered (0 if it
	// did not); each node's lag counts from it.
	LeaderIndex uint64      `json:"leader_index"`
	Nodes       []FleetNode `json:"nodes"`
	// Unreachable are the members that could not be asked for their
	// followers, with why: a follower they serve is listed only if
	// another member admitted it (then without its source).
	Unreachable map[string]string `json:"unreachable,omitempty"`
	// Partial says the view may miss followers any member knows: no
	// member answered, or one knew more than it could list.
	Partial bool `json:"partial,omitempty"`
}

// Followers counts the followers in the view.
func (f Fleet) Followers() int {
	count := 0
	for _, nd := range f.Nodes {
		if nd.Role == "follower" {
			count++
		}
	}
	return count
}

// fleetAnswer is a node's answer on fleetProtocol: itself, the followers
// it serves a tail to, and the other followers it admitted by their pass
// (at most maxFleetAdmitted; AdmittedTruncated when there were more).
type fleetAnswer struct {
	Self              FleetNode          `json:"self"`
	Followers         []FleetNode        `json:"followers"`
	Admitted          []admittedFollower `json:"admitted,omitempty"`
	AdmittedTruncated bool               `json:"admitted_truncated,omitempty"`
}

// admittedFollower is a follower a member admitted, as it knows it.
type admittedFollower struct {
	ID    string `json:"id"`
	Agent string `json:"agent"`
}

// tailClient is one follower a member serves a tail to.
type tailClient struct {
	peer  peer.ID
	since time.Time
	sent  atomic.Uint64 // the raft index sent through
	// stop ends the tail (its follower was revoked, revoke.go).
	stop context.CancelFunc
}

// tailClients are the tails a member serves now (node/tail.go adds and
// removes them), at most maxTailClients.
type tailClients struct {
	mu sync.Mutex
	m  map[*tailClient]struct{}
}

// add records a new tail to p, ended by stop; ok false when
// maxTailClients are served.
func (c *tailClients) add(p peer.ID, now time.Time, stop context.CancelFunc) (tc *tailClient, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= maxTailClients {
		return nil, false
	}
	if c.m == nil {
		c.m = map[*tailClient]struct{}{}
	}
	tc = &tailClient{peer: p, since: now, stop: stop}
	c.m[tc] = struct{}{}
	return tc, true
}

func (c *tailClients) remove(tc *tailClient) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, tc)
}

// cut ends the tails to the peers in revoked and returns those peers.
func (c *tailClients) cut(revoked map[peer.ID]bool) []peer.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []peer.ID
	for tc := range c.m {
		if revoked[tc.peer] {
			if tc.stop != nil {
				tc.stop()
			}
			delete(c.m, tc)
			out = append(out, tc.peer)
		}
	}
	return out
}

// list returns one tail per follower (its newest: a follower that
// reconnected may have an old stream not yet closed), ordered by peer id.
func (c *tailClients) list() []*tailClient {
	c.mu.Lock()
	byPeer := make(map[peer.ID]*tailClient, len(c.m))
	for tc := range c.m {
		if o, ok := byPeer[tc.peer]; !ok || tc.since.After(o.since) {
			byPeer[tc.peer] = tc
		}
	}
	c.mu.Unlock()
	out := make([]*tailClient, 0, len(byPeer))
	for _, tc := range byPeer {
		out = append(out, tc)
	}
	slices.SortFunc(out, func(a, b *tailClient) int { return cmp.Compare(a.peer, b.peer) })
	return out
}

// count is how many followers are served (len(list()) without the list).
func (c *tailClients) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[peer.ID]struct{}, len(c.m))
	for tc := range c.m {
		seen[tc.peer] = struct{}{}
	}
	return len(seen)
}

// selfNode describes this node for the fleet view.
func (n *Node) selfNode() FleetNode {
	st := n.meta.Status()
	self := FleetNode{ID: n.host.ID().String(), Role: n.role(st), Agent: userAgent(n.cfg.Version),
		Version: cmp.Or(n.cfg.Version, "dev"), Region: n.cfg.Region, Zone: n.cfg.Zone,
		Applied: max(st.AppliedIndex, st.Tail.Applied), Source: st.Tail.Source}
	return self
}

// servedFollowers describes the followers this node serves a tail to.
func (n *Node) servedFollowers() []FleetNode {
	self := n.host.ID().String()
	var out []FleetNode
	for _, tc := range n.tails.list() {
		agent := n.host.AgentVersion(tc.peer)
		l := n.peers.labelsOf(tc.peer.String())
		out = append(out, FleetNode{ID: tc.peer.String(), Role: "follower", Agent: agent, Version: agentVersion(agent),
			Region: l.Region, Zone: l.Zone, Applied: tc.sent.Load(), Source: self, Since: tc.since})
	}
	return out
}

// fleetAnswerOf is this node's fleetAnswer.
func (n *Node) fleetAnswerOf() fleetAnswer {
	a := fleetAnswer{Self: n.selfNode(), Followers: slices.DeleteFunc(n.servedFollowers(), func(f FleetNode) bool {
		return n.refuseRevoked(f.ID) != nil
	})}
	served := make(map[string]bool, len(a.Followers))
	for _, f := range a.Followers {
		served[f.ID] = true
	}
	admitted := n.gate.admittedFollowers(time.Now())
	slices.Sort(admitted)
	for _, p := range admitted {
		if served[p.String()] {
			continue
		}
		if len(a.Admitted) == maxFleetAdmitted {
			a.AdmittedTruncated = true
			break
		}
		a.Admitted = append(a.Admitted, admittedFollower{ID: p.String(), Agent: n.host.AgentVersion(p)})
	}
	return a
}

// serveFleet answers fleetProtocol.
func (n *Node) serveFleet(ctx context.Context, from peer.ID, _ []byte) []byte {
	b, err := json.Marshal(n.fleetAnswerOf())
	if err != nil || len(b) > maxFleetAnswer {
		n.log.Warn("the fleet answer does not fit", "bytes", len(b), "err", err)
		return nil
	}
	return b
}

// decodeFleetAnswer decodes and checks a member's answer: at most
// maxTailClients followers, valid peer ids, bounded fields, the member
// itself as Self and as every follower's source.
func decodeFleetAnswer(member string, b []byte) (fleetAnswer, error) {
	var a fleetAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("a bad fleet answer: %w", err)
	}
	if len(a.Followers) > maxTailClients || len(a.Admitted) > maxFleetAdmitted {
		return a, fmt.Errorf("a fleet answer lists %d followers and %d admitted, at most %d and %d",
			len(a.Followers), len(a.Admitted), maxTailClients, maxFleetAdmitted)
	}
	if a.Self.ID != member {
		return a, fmt.Errorf("a fleet answer about %q, not the member asked", truncateID(a.Self.ID))
	}
	for _, nd := range append([]FleetNode{a.Self}, a.Followers...) {
		if _, err := peer.Decode(nd.ID); err != nil {
			return a, fmt.Errorf("a fleet answer names a bad peer id %q", truncateID(nd.ID))
		}
		for _, s := range []string{nd.Role, nd.Agent, nd.Version, nd.Region, nd.Zone, nd.Source} {
			if len(s) > maxFleetField {
				return a, fmt.Errorf("a fleet answer with a field of %d bytes, at most %d", len(s), maxFleetField)
			}
		}
	}
	for _, ad := range a.Admitted {
		if _, err := peer.Decode(ad.ID); err != nil || len(ad.Agent) > maxFleetField {
			return a, fmt.Errorf("a fleet answer names a bad admitted follower %q", truncateID(ad.ID))
		}
	}
	for i := range a.Followers {
		if a.Followers[i].Source != member || a.Followers[i].Role != "follower" {
			return a, fmt.Errorf("a fleet answer lists %s as tailing from %q as a %q", a.Followers[i].ID, truncateID(a.Followers[i].Source), truncateID(a.Followers[i].Role))
		}
	}
	return a, nil
}

// askFleet asks one member for itself and its followers.
func (n *Node) askFleet(ctx context.Context, m consensus.Member) (fleetAnswer, error) {
	if m.ID == n.host.ID().String() {
		return n.fleetAnswerOf(), nil
	}
	pid, err := peerOf(n.host, consensus.Server{ID: m.ID, Address: m.Address})
	if err != nil {
		return fleetAnswer{}, err
	}
	if n.following() {
		// A member lets a follower in once it saw its pass.
		if err := n.presentPass(ctx, pid); err != nil {
			return fleetAnswer{}, err
		}
	}
	resp, err := n.host.Request(ctx, pid, fleetProtocol, nil, maxFleetAnswer)
	if err != nil {
		return fleetAnswer{}, err
	}
	if len(resp) == 0 {
		return fleetAnswer{}, errors.New("it did not answer (an older release, or an answer too large)")
	}
	return decodeFleetAnswer(m.ID, resp)
}

// takeFleet asks every member of the configuration this node knows, at
// once, for itself and its followers.
func (n *Node) takeFleet(ctx context.Context) (Fleet, error) {
	members, err := n.meta.Members()
	if err != nil {
		return Fleet{}, fmt.Errorf("reading the cluster's members: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, fleetAskTimeout)
	defer cancel()
	answers := make([]fleetAnswer, len(members))
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() { answers[i], errs[i] = n.askFleet(ctx, m) })
	}
	wg.Wait()
	f := mergeFleet(members, answers, errs, n.host, n.peers.labelsOf, time.Now())
	// A member that has not applied a revocation yet may still list the
	// follower revoked.
	f.Nodes = slices.DeleteFunc(f.Nodes, func(nd FleetNode) bool { return nd.Role == "follower" && n.refuseRevoked(nd.ID) != nil })
	return f, nil
}

// mergeFleet builds the view from the members' answers (errs[i] set for
// a member that could not be asked: it is listed with what this node
// knows of it: its agent, and where it runs from labels). A follower
// listed by two members (it moved between them) is kept with its newest
// tail; one that only some member admitted is listed without a source,
// placed from labels.
func mergeFleet(members []consensus.Member, answers []fleetAnswer, errs []error, a agents, labels func(id string) peerLabels, now time.Time) Fleet {
	f := Fleet{At: now}
	followers := map[string]FleetNode{}
	admitted := map[string]string{} // id → agent
	isMember := map[string]bool{}
	answered := 0
	for _, m := range members {
		isMember[m.ID] = true
	}
	for i, m := range members {
		if errs[i] != nil {
			if f.Unreachable == nil {
				f.Unreachable = map[string]string{}
			}
			f.Unreachable[m.ID] = errs[i].Error()
			l := labels(m.ID)
			nd := FleetNode{ID: m.ID, Region: l.Region, Zone: l.Zone}
			if m.Suffrage == consensus.Voter {
				nd.Role = "voter"
			} else {
				nd.Role = "non-voter"
			}
			if id, err := peer.Decode(m.ID); err == nil {
				nd.Agent = a.AgentVersion(id)
				nd.Version = agentVersion(nd.Agent)
			}
			f.Nodes = append(f.Nodes, nd)
			continue
		}
		answered++
		f.Partial = f.Partial || answers[i].AdmittedTruncated
		for _, ad := range answers[i].Admitted {
			admitted[ad.ID] = cmp.Or(admitted[ad.ID], ad.Agent)
		}
		f.Nodes = append(f.Nodes, answers[i].Self)
		if answers[i].Self.Role == "leader" {
			f.LeaderIndex = answers[i].Self.Applied
		}
		for _, fl := range answers[i].Followers {
			if o, ok := followers[fl.ID]; !ok || fl.Since.After(o.Since) {
				followers[fl.ID] = fl
			}
		}
	}
	f.Partial = f.Partial || answered == 0
	for id, agent := range admitted {
		if _, ok := followers[id]; !ok && !isMember[id] {
			l := labels(id)
			followers[id] = FleetNode{ID: id, Role: "follower", Agent: agent, Version: agentVersion(agent), Region: l.Region, Zone: l.Zone}
		}
	}
	for _, fl := range followers {
		if !isMember[fl.ID] { // it became one: its old tail may not have ended yet
			f.Nodes = append(f.Nodes, fl)
		}
	}
	rank := map[string]int{"leader": 0, "voter": 1, "non-voter": 2, "follower": 3}
	slices.SortFunc(f.Nodes, func(x, y FleetNode) int {
		return cmp.Or(cmp.Compare(rank[x.Role], rank[y.Role]), cmp.Compare(x.ID, y.ID))
	})
	for i := range f.Nodes {
		if f.Nodes[i].Role == "follower" && f.Nodes[i].Source == "" {
			continue // admitted only: its index is unknown
		}
		if f.LeaderIndex > f.Nodes[i].Applied {
			f.Nodes[i].Lag = f.LeaderIndex - f.Nodes[i].Applied
		}
	}
	return f
}

// agentVersion is the version in a user agent ("meshreg/v1.2.0 ops/7" →
// "v1.2.0"), "" if it is no meshreg agent.
func agentVersion(agent string) string {
	rest, ok := strings.CutPrefix(agent, "meshreg/")
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, " ")
	return v
}

// fleetCache keeps the last fleet view for fleetTTL; its mutex also makes
// concurrent callers wait for one view instead of each asking the members.
type fleetCache struct {
	mu   sync.Mutex
	view Fleet
}

// Fleet returns the fleet view, taken at most fleetTTL ago.
func (n *Node) Fleet(ctx context.Context) (Fleet, error) {
	n.fleet.mu.Lock()
	defer n.fleet.mu.Unlock()
	if !n.fleet.view.At.IsZero() && time.Since(n.fleet.view.At) < fleetTTL {
		return n.fleet.view, nil
	}
	v, err := n.takeFleet(ctx)
	if err != nil {
		return Fleet{}, err
	}
	n.fleet.view = v
	return v, nil
}

var _ api.FleetViewer = (*Node)(nil)

// Nodes is api.FleetViewer: the document of GET /_meshreg/v1/nodes.
func (n *Node) Nodes(ctx context.Context) (any, error) { return n.Fleet(ctx) }

// recentFollowers is the follower count of a fleet view taken within
// the last minute, without asking anyone (the status document's).
func (n *Node) recentFollowers() *int {
	if !n.fleet.mu.TryLock() {
		return nil // a view is being taken
	}
	defer n.fleet.mu.Unlock()
	if n.fleet.view.At.IsZero() || time.Since(n.fleet.view.At) > time.Minute {
		return nil
	}
	count := n.fleet.view.Followers()
	return &count
}
