package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/node/nodefake"
)

// testPeers makes n peer ids on a fake network.
func testPeers(t *testing.T, n int) []*nodefake.Transport {
	t.Helper()
	net := nodefake.NewNetwork()
	var ts []*nodefake.Transport
	for range n {
		tr, err := net.NewTransport()
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tr)
	}
	return ts
}

// TestTailClientsBound: a member serves at most maxTailClients tails at
// once and refuses the next; a closed tail frees its place; a follower
// with two streams (it reconnected) is listed once, with its newest.
func TestTailClientsBound(t *testing.T) {
	t.Parallel()
	ps := testPeers(t, 2)
	var c tailClients
	now := time.Now()
	var first *tailClient
	for i := range maxTailClients {
		tc, ok := c.add(ps[i%2].ID(), now.Add(time.Duration(i)), nil)
		if !ok {
			t.Fatalf("tail %d refused below the bound", i)
		}
		if i == 0 {
			first = tc
		}
		tc.sent.Store(uint64(i))
	}
	if _, ok := c.add(ps[0].ID(), now, nil); ok {
		t.Fatalf("tail %d accepted above the bound %d", maxTailClients+1, maxTailClients)
	}
	c.remove(first)
	if _, ok := c.add(ps[0].ID(), now, nil); !ok {
		t.Fatal("a place freed by a closed tail is refused")
	}
	list := c.list()
	if len(list) != 2 || c.count() != 2 {
		t.Fatalf("list %d, count %d: want one per follower (2)", len(list), c.count())
	}
	for _, tc := range list {
		if want := now.Add(time.Duration(maxTailClients - 2)); tc.peer == ps[0].ID() && !tc.since.Equal(want) {
			t.Errorf("follower %s listed with its tail since %v, want its newest %v", tc.peer, tc.since, want)
		}
	}
}

// TestDecodeFleetAnswerRefusesHostile: a member's answer is bounded and
// checked: the member itself, valid peer ids, bounded fields, every
// follower tailing from it.
func TestDecodeFleetAnswerRefusesHostile(t *testing.T) {
	t.Parallel()
	ps := testPeers(t, 3)
	member, f1, f2 := ps[0].ID().String(), ps[1].ID().String(), ps[2].ID().String()
	good := func() fleetAnswer {
		return fleetAnswer{Self: FleetNode{ID: member, Role: "voter", Agent: userAgent("v1")},
			Followers: []FleetNode{{ID: f1, Role: "follower", Source: member}, {ID: f2, Role: "follower", Source: member}}}
	}
	enc := func(a fleetAnswer) []byte {
		b, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if a, err := decodeFleetAnswer(member, enc(good())); err != nil || len(a.Followers) != 2 {
		t.Fatalf("a good answer: %+v, %v", a, err)
	}
	many := good()
	for i := range maxTailClients + 1 {
		many.Followers = append(many.Followers, FleetNode{ID: fmt.Sprint(i)})
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"not JSON", []byte("\x00garbage")},
		{"too many followers", enc(many)},
		{"another member", enc(func() fleetAnswer { a := good(); a.Self.ID = f1; return a }())},
		{"bad peer id", enc(func() fleetAnswer { a := good(); a.Followers[1].ID = "not-a-peer"; return a }())},
		{"long field", enc(func() fleetAnswer { a := good(); a.Followers[0].Agent = strings.Repeat("a", maxFleetField+1); return a }())},
		{"follower of another member", enc(func() fleetAnswer { a := good(); a.Followers[0].Source = f2; return a }())},
		{"member posing as a follower", enc(func() fleetAnswer { a := good(); a.Followers[0].Role = "voter"; return a }())},
	} {
		if _, err := decodeFleetAnswer(member, tc.b); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// TestMergeFleet: the members' answers make one view: members first, the
// leader's applied index as the reference for every lag, a follower two
// members list (it moved) once with its newest tail, and a member that
// could not be asked listed with its suffrage and what identify said.
func TestMergeFleet(t *testing.T) {
	t.Parallel()
	ps := testPeers(t, 5)
	id := func(i int) string { return ps[i].ID().String() }
	ps[2].SetAgent("meshreg/v0.9.0 ops/7")
	id2 := id(2)
	members := []consensus.Member{{ID: id(0), Suffrage: consensus.Voter}, {ID: id(1), Suffrage: consensus.Voter}, {ID: id(2), Suffrage: consensus.Nonvoter}}
	now := time.Now()
	answers := []fleetAnswer{
		{Self: FleetNode{ID: id(0), Role: "voter", Applied: 90},
			Followers: []FleetNode{{ID: id(3), Role: "follower", Source: id(0), Applied: 80, Since: now.Add(-time.Minute)}}},
		{Self: FleetNode{ID: id(1), Role: "leader", Applied: 100},
			Followers: []FleetNode{{ID: id(3), Role: "follower", Source: id(1), Applied: 99, Since: now}, {ID: id(4), Role: "follower", Source: id(1), Applied: 100, Since: now}}},
		{},
	}
	errs := []error{nil, nil, errors.New("connection refused")}
	labels := func(id string) peerLabels {
		if id == id2 {
			return peerLabels{Region: "eu", Zone: "z2"}
		}
		return peerLabels{}
	}
	f := mergeFleet(members, answers, errs, ps[0], labels, now)
	if f.LeaderIndex != 100 || len(f.Nodes) != 5 || f.Followers() != 2 {
		t.Fatalf("view: leader index %d, %d nodes, %d followers: %+v", f.LeaderIndex, len(f.Nodes), f.Followers(), f)
	}
	if f.Nodes[0].ID != id(1) || f.Nodes[1].ID != id(0) || f.Nodes[2].ID != id(2) || f.Nodes[3].Role != "follower" {
		t.Errorf("order: %+v", f.Nodes)
	}
	if f.Nodes[1].Lag != 10 || f.Nodes[0].Lag != 0 {
		t.Errorf("lags: %+v", f.Nodes)
	}
	for _, nd := range f.Nodes {
		if nd.ID == id(3) && (nd.Source != id(1) || nd.Lag != 1) {
			t.Errorf("the follower that moved: %+v, want it from %s with lag 1", nd, id(1))
		}
		if nd.ID == id(2) && (nd.Role != "non-voter" || nd.Version != "v0.9.0" || nd.Zone != "z2") {
			t.Errorf("the member not asked: %+v", nd)
		}
	}
	if msg := f.Unreachable[id(2)]; !strings.Contains(msg, "connection refused") || len(f.Unreachable) != 1 || f.Partial {
		t.Errorf("unreachable: %v, partial %v", f.Unreachable, f.Partial)
	}

	// Followers admitted by a member without a tail from it (between two
	// streams, or tailing the member not asked) are listed without a
	// source; a member among them is not; a member that could not list
	// all it admitted, or no answer at all, makes the view partial.
	answers[0].Admitted = []admittedFollower{{ID: id(4), Agent: "meshreg/v9 ops/9"}, {ID: id(1)}}
	answers[1].Admitted = []admittedFollower{{ID: id(4)}}
	f = mergeFleet(members[:2], answers[:2], errs[:2], ps[0], labels, now)
	if len(f.Nodes) != 4 || f.Partial {
		t.Fatalf("view with admitted followers: %+v", f)
	}
	answers[0].Admitted = []admittedFollower{{ID: id(3), Agent: "meshreg/v9 ops/9"}}
	answers[1].Followers, answers[1].Admitted = nil, nil
	f = mergeFleet(members[:2], answers[:2], errs[:2], ps[0], labels, now)
	for _, nd := range f.Nodes {
		if nd.ID == id(3) && (nd.Source != id(0) || nd.Lag != 20) {
			t.Errorf("a follower served by one member, admitted by another: %+v", nd)
		}
		if nd.ID == id(4) {
			t.Errorf("a follower nobody lists: %+v", nd)
		}
	}
	answers[0].Followers, answers[0].AdmittedTruncated = nil, true
	f = mergeFleet(members[:2], answers[:2], errs[:2], ps[0], labels, now)
	var only FleetNode
	for _, nd := range f.Nodes {
		if nd.ID == id(3) {
			only = nd
		}
	}
	if !f.Partial || only.Source != "" || only.Lag != 0 || only.Version != "v9" {
		t.Errorf("a truncated answer: partial %v, admitted-only follower %+v", f.Partial, only)
	}
	if f := mergeFleet(members, make([]fleetAnswer, 3), []error{errs[2], errs[2], errs[2]}, ps[0], labels, now); !f.Partial || len(f.Unreachable) != 3 {
		t.Errorf("no member answered: partial %v, unreachable %v", f.Partial, f.Unreachable)
	}
}

// TestNewOpsWaitForEveryFollower: the upgrade gate counts the followers
// of the fleet view: an older one (or one whose member did not identify
// it) holds a newer op or setting back, naming it and its member; a
// member that could not be asked fails the check closed.
func TestNewOpsWaitForEveryFollower(t *testing.T) {
	t.Parallel()
	ps := testPeers(t, 3)
	member, f1, f2 := ps[0].ID().String(), ps[1].ID().String(), ps[2].ID().String()
	view := func(agent1, agent2 string) Fleet {
		return Fleet{Nodes: []FleetNode{{ID: member, Role: "leader", Agent: userAgent("v2")},
			{ID: f1, Role: "follower", Agent: agent1, Source: member}, {ID: f2, Role: "follower", Agent: agent2, Source: member}}}
	}
	opApplies := func(op state.Op) func(string) bool {
		return func(agent string) bool { return agentLastOp(agent) >= op }
	}
	policy := func(agent string) bool { return agentAppliesSetting(agent, state.SettingPolicy) }
	if err := fleetApplies(view(userAgent("v2"), userAgent("v2")), "op", opApplies(state.LastOp)); err != nil {
		t.Fatalf("every follower runs this release: %v", err)
	}
	if err := fleetApplies(view(userAgent("v2"), userAgent("v2")), "policy", policy); err != nil {
		t.Fatalf("every follower applies the policy: %v", err)
	}
	old := "meshreg/v0.8.0 ops/5"
	for _, tc := range []struct {
		name    string
		v       Fleet
		applies func(string) bool
		want    []string
	}{
		{"older follower", view(userAgent("v2"), old), opApplies(state.OpGCSweep), []string{f2, member, "meshreg/v0.8.0", "upgrade every follower"}},
		{"follower not identified", view("", userAgent("v2")), opApplies(state.OpGCSweep), []string{f1, "did not identify"}},
		{"older setting", view(userAgent("v2"), "meshreg/v1.2.0 ops/8"), policy, []string{f2}},
		{"no member answered", func() Fleet {
			v := view(userAgent("v2"), userAgent("v2"))
			v.Unreachable, v.Partial = map[string]string{f1: "timeout"}, true
			return v
		}(), opApplies(state.OpGCSweep), []string{"member " + f1, "could not be asked", "timeout"}},
		{"a member listed only part of its followers", func() Fleet {
			v := view(userAgent("v2"), userAgent("v2"))
			v.Partial = true
			return v
		}(), opApplies(state.OpGCSweep), []string{"more followers"}},
	} {
		err := fleetApplies(tc.v, "this change", tc.applies)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: err = %v, want it to say %q", tc.name, err, w)
			}
		}
	}
	// A member not asked while another answered hides no follower: each
	// presents its pass to every member, which lists it.
	v := view(userAgent("v2"), userAgent("v2"))
	v.Unreachable = map[string]string{f1: "timeout"}
	if err := fleetApplies(v, "op", opApplies(state.LastOp)); err != nil {
		t.Errorf("a member not asked, the view whole: %v", err)
	}
	// The original ops need no one's agreement.
	if err := fleetApplies(view(old, old), "op", opApplies(state.OpDeleteTag)); err != nil {
		t.Errorf("an original op with older followers: %v", err)
	}
}

func TestAgentVersion(t *testing.T) {
	t.Parallel()
	for agent, want := range map[string]string{userAgent("v1.4.0"): "v1.4.0", "meshreg/v0.9.0 ops/7": "v0.9.0", "go-libp2p/0.40": "", "": ""} {
		if got := agentVersion(agent); got != want {
			t.Errorf("agentVersion(%q) = %q, want %q", agent, got, want)
		}
	}
}

// TestUpgradeGateAsksTheMembersForTheirFollowers: on nodes wired as in
// production (fake network and metadata), the gate of a newer op asks
// every member for the followers it serves: an older follower of another
// member holds the op back, naming itself and its member; once it runs
// this release the op passes; a member cut off from the proposer fails
// the check closed, named. The fleet view lists members and follower.
func TestUpgradeGateAsksTheMembersForTheirFollowers(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	a, b := fn.add("z1", nil), fn.add("z2", nil)
	fn.meta.Lead(a.host.ID().String())
	follower, err := fn.net.NewTransport()
	if err != nil {
		t.Fatal(err)
	}
	follower.SetAgent("meshreg/v0.8.0 ops/5")
	tc, ok := b.tails.add(follower.ID(), time.Now(), nil)
	if !ok {
		t.Fatal("the member refused its first follower")
	}
	tc.sent.Store(3)
	fresh := func() { a.fleet.mu.Lock(); a.fleet.view = Fleet{}; a.fleet.mu.Unlock() }

	err = a.membersApply(state.OpGCSweep)
	if err == nil || !strings.Contains(err.Error(), "follower "+follower.ID().String()) ||
		!strings.Contains(err.Error(), b.host.ID().String()) || !strings.Contains(err.Error(), "meshreg/v0.8.0") {
		t.Fatalf("an older follower: err = %v, want one naming it, its member and what it runs", err)
	}
	if err := a.membersApply(state.OpDeleteTag); err != nil {
		t.Fatalf("an original op with an older follower: %v", err)
	}
	view, err := a.Fleet(t.Context())
	if err != nil || len(view.Nodes) != 3 || view.Followers() != 1 || len(view.Unreachable) != 0 {
		t.Fatalf("fleet view: %+v, %v", view, err)
	}
	if fl := view.Nodes[2]; fl.ID != follower.ID().String() || fl.Source != b.host.ID().String() || fl.Version != "v0.8.0" || fl.Applied != 3 {
		t.Errorf("the follower in the view: %+v", fl)
	}

	follower.SetAgent(userAgent("v2"))
	b.host.(*nodefake.Transport).SetAgent(userAgent("v2")) // the fake's agent names no settings
	fresh()
	if err := a.membersApply(state.LastOp); err != nil {
		t.Fatalf("every member and follower runs this release: %v", err)
	}
	if err := a.membersApplySetting(state.SettingPolicy); err != nil {
		t.Fatalf("every member and follower applies the policy: %v", err)
	}

	// b is cut off from a; the follower presented its pass to a too (as
	// every follower does to every member): a's own answer lists it.
	a.gate.admitFollower(follower.ID(), time.Minute)
	follower.SetAgent("meshreg/v0.8.0 ops/5")
	fn.net.Cut(a.host.ID(), b.host.ID())
	fresh()
	err = a.membersApply(state.OpGCSweep)
	if err == nil || !strings.Contains(err.Error(), "follower "+follower.ID().String()) {
		t.Fatalf("an older follower of a member cut off: err = %v, want the check to name it", err)
	}
	view, err = a.Fleet(t.Context())
	if err != nil || view.Partial || len(view.Unreachable) != 1 || view.Unreachable[b.host.ID().String()] == "" || view.Followers() != 1 {
		t.Fatalf("fleet view with b cut off: %+v, %v", view, err)
	}
	follower.SetAgent(userAgent("v2"))
	fresh()
	if err := a.membersApply(state.LastOp); err != nil {
		t.Fatalf("a member cut off, every follower of this release: %v", err)
	}
	if st := a.Status(t.Context()).(Status); st.Followers == nil || st.FollowersServed != 0 {
		t.Errorf("status after a fleet view: followers %v, served %d", st.Followers, st.FollowersServed)
	}
}

// stoppedTail is metadata whose tail stopped at an entry newer than this
// release (consensus.TailStatus.Stopped), as a follower's would.
type stoppedTail struct {
	Metadata
	why string
}

func (m stoppedTail) Status() consensus.Status {
	st := m.Metadata.Status()
	st.State, st.Members = consensus.Follower, nil // in no configuration
	st.Following, st.Tail = true, consensus.TailStatus{Applied: 41, Stopped: m.why}
	return st
}

// TestStoppedFollowerIsNotReady: a follower that stopped at an entry it
// cannot apply says why in /readyz (Ready) and in its status.
func TestStoppedFollowerIsNotReady(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	n := fn.add("z1", nil)
	if err := n.Ready(t.Context()); err != nil {
		t.Fatalf("before: %v", err)
	}
	why := "this node (version v0.9.0) is older than the cluster: entry 42 has op 9 it does not know (it applies ops 1 to 8); upgrade it"
	n.meta = stoppedTail{n.meta, why}
	if err := n.Ready(t.Context()); err == nil || err.Error() != why {
		t.Errorf("Ready = %v, want %q", err, why)
	}
	st := n.Status(t.Context()).(Status)
	if st.Role != "follower" || st.Follower == nil || st.Follower.Stopped != why {
		t.Errorf("status: role %q, follower %+v", st.Role, st.Follower)
	}
}

// FuzzDecodeFleetAnswer: whatever a member sends, decoding does not panic,
// and an answer it accepts is within the bounds: the member itself, at
// most maxTailClients followers, each tailing from it, valid peer ids and
// bounded fields.
func FuzzDecodeFleetAnswer(f *testing.F) {
	const member = "12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf"
	const follower = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	good, err := json.Marshal(fleetAnswer{Self: FleetNode{ID: member, Role: "voter", Agent: userAgent("v1"), Applied: 7},
		Followers: []FleetNode{{ID: follower, Role: "follower", Source: member, Applied: 6, Since: time.Unix(1, 0)}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"self":{"id":"` + member + `"},"followers":null}`))
	f.Add([]byte(`{"self":{"id":"` + member + `"},"followers":[{"id":"x"}]}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"self":{"id":"` + member + `"},"admitted":[{"id":"` + follower + `","agent":"meshreg/v1 ops/8"}],"admitted_truncated":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeFleetAnswer(member, b)
		if err != nil {
			return
		}
		if a.Self.ID != member || len(a.Followers) > maxTailClients || len(a.Admitted) > maxFleetAdmitted {
			t.Fatalf("accepted %+v", a)
		}
		for _, ad := range a.Admitted {
			if _, err := peer.Decode(ad.ID); err != nil || len(ad.Agent) > maxFleetField {
				t.Fatalf("accepted an admitted follower %+v", ad)
			}
		}
		for _, fl := range a.Followers {
			if _, err := peer.Decode(fl.ID); err != nil || fl.Source != member || fl.Role != "follower" || len(fl.Agent) > maxFleetField {
				t.Fatalf("accepted a follower %+v", fl)
			}
		}
	})
}
