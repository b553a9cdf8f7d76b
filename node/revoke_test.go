package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/p2p"
)

// revokeOn makes n enforce a list naming ids, as if it had applied it
// (test-only: the fakes keep no settings).
func revokeOn(t *testing.T, n *Node, ids ...peer.ID) {
	t.Helper()
	var l state.RevokedFollowers
	for _, id := range ids {
		l.Revoked = append(l.Revoked, state.Revocation{ID: id.String(), At: time.Now().Unix(), By: "test"})
	}
	body, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := state.ParseRevokedFollowers(body); err != nil {
		t.Fatal(err)
	}
	n.revoked.refresh.Lock()
	defer n.revoked.refresh.Unlock()
	n.enforceRevocations(body, l)
}

// TestRevokedFollowerIsRefusedEverywhere: once a member enforces a list
// naming a follower, the gate drops the follower's admission at once and
// never admits it again (but on the member protocol, where it hears why),
// its open tail is closed, its pass is refused as revoked, and so is its
// join with a valid token, with what to do.
func TestRevokedFollowerIsRefusedEverywhere(t *testing.T) {
	fn := newFakeNet(t)
	full := func(c *Config) { c.Voters, c.MaxRaftMembers = 3, 0 }
	leader := fn.add("z1", full)
	other := fn.add("z1", full)
	fn.add("z1", full)
	token, _, err := leader.CreateJoinToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, follower := newTestIdentity(t)
	ask := func(n *Node, req memberRequest) memberResult {
		t.Helper()
		b, _ := json.Marshal(req)
		var res memberResult
		if err := json.Unmarshal(n.serveMember(t.Context(), follower, b), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	join := memberRequest{Op: "join", ID: follower.String(), Address: "/ip4/127.0.0.1/tcp/1/p2p/" + follower.String(), Token: token}
	res := ask(leader, join)
	if res.Error != "" || !res.Follow || res.Pass == "" {
		t.Fatalf("the join: %+v, want follow with a pass", res)
	}
	if r := ask(other, memberRequest{Op: "pass", ID: follower.String(), Pass: res.Pass}); r.Error != "" || !other.gate.isFollower(follower) {
		t.Fatalf("the pass at another member: %+v, want admitted", r)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	if _, ok := other.tails.add(follower, time.Now(), cancel); !ok {
		t.Fatal("no tail slot")
	}

	revokeOn(t, other, follower)
	if other.gate.isFollower(follower) {
		t.Error("the gate still admits the revoked follower")
	}
	for _, proto := range []string{tailProtocol, forwardProtocol, fleetProtocol, helloProtocol, string(p2p.RaftProtocol)} {
		if other.gate.allow(follower, protocol.ID(proto)) {
			t.Errorf("the gate lets the revoked follower open %s", proto)
		}
	}
	if !other.gate.allow(follower, memberProtocol) {
		t.Error("the revoked follower cannot hear why (the member protocol is closed to it)")
	}
	if ctx.Err() == nil || other.tails.count() != 0 {
		t.Error("the revoked follower's open tail was not closed")
	}
	other.gate.admitFollower(follower, time.Hour)
	other.gate.admit(follower, time.Hour)
	if other.gate.allow(follower, tailProtocol) {
		t.Error("the gate admitted the revoked follower again")
	}
	r := ask(other, memberRequest{Op: "pass", ID: follower.String(), Pass: res.Pass})
	if !r.Revoked || r.Pass != "" || !strings.Contains(r.Error, "revoked") || !strings.Contains(r.Error, "new identity") {
		t.Errorf("the revoked follower's pass: %+v, want refused as revoked, saying what to do", r)
	}

	// Joining again, with a valid token, through a member that enforces the
	// list: refused as revoked. A fresh token changes nothing.
	token2, _, err := other.CreateJoinToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	join.Token = token2
	if r := ask(other, join); !r.Revoked || r.Follow || !strings.Contains(r.Error, "revoked") {
		t.Errorf("the revoked follower's join: %+v, want refused as revoked", r)
	}
	err = other.admitJoin(follower, join)
	if !errors.Is(err, errRevoked) || !errors.Is(err, ErrNotAdmitted) {
		t.Errorf("admitJoin = %v, want errRevoked and ErrNotAdmitted", err)
	}
	// The fleet view leaves it out, though a tail to it may still be
	// listed by a member that has not applied the list yet.
	for _, f := range other.fleetAnswerOf().Admitted {
		if f.ID == follower.String() {
			t.Error("the fleet answer lists the revoked follower")
		}
	}
}

// TestRevokedNodeStops: a follower that hears it was revoked (a member's
// refusal, or the list naming it) says so in /readyz and its role, asks
// nothing more, and stays revoked after a restart (revokedFile).
func TestRevokedNodeStops(t *testing.T) {
	fn := newFakeNet(t)
	dir := t.TempDir()
	n := fn.add("z1", func(c *Config) { c.DataDir = dir })
	if n.revokedSelf() != nil {
		t.Fatal("a node starts revoked")
	}
	revokeOn(t, n, n.host.ID())
	if n.revokedSelf() == nil {
		t.Fatal("a node that applied a list naming it is not revoked")
	}
	if err := n.Ready(t.Context()); err == nil || !strings.Contains(err.Error(), "revoked by an operator") {
		t.Errorf("Ready = %v, want the revocation", err)
	}
	if st := n.Status(t.Context()).(Status); st.Role != "revoked" || !strings.Contains(st.Revoked, "new identity") {
		t.Errorf("status role %q, revoked %q; want revoked, saying what to do", st.Role, st.Revoked)
	}
	if !n.stayRevoked() || n.removed() {
		t.Error("a revoked node would join again, or counts as removed")
	}
	if err := n.catchUp(t.Context()); !errors.Is(err, errRevoked) {
		t.Errorf("catchUp = %v, want errRevoked at once", err)
	}
	// The record in the data dir, read at start.
	again := &Node{cfg: n.cfg, host: n.host, log: n.log}
	again.loadRevokedSelf()
	if again.revokedSelf() == nil {
		t.Error("the revocation does not survive a restart")
	}
}

// TestConcurrentRevocationsAreAllKept: on a real one-node cluster (badger,
// Raft), revocations asked at once are each written (the leader reads,
// adds and writes one at a time: none lost to another's write), a second
// revocation of an id is refused as already revoked, and the list is the
// replicated setting, in its documented format.
func TestConcurrentRevocationsAreAllKept(t *testing.T) {
	n := openTestNode(t)
	running(t, n)
	waitReady(t, n)

	const count = 16
	ids := make([]peer.ID, count)
	for i := range ids {
		_, ids[i] = newTestIdentity(t)
	}
	errs := make(chan error, count)
	for _, id := range ids {
		go func() {
			did, err := n.RemoveMember(t.Context(), id.String(), "alice")
			if err == nil && did != api.RevokedFollower {
				err = fmt.Errorf("RemoveMember(%s) did %q, want revoked", id, did)
			}
			errs <- err
		}()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	body, list, err := n.revocationList()
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Revoked) != count {
		t.Fatalf("the list holds %d revocations after %d at once, want all: %s", len(list.Revoked), count, body)
	}
	for _, id := range ids {
		if r, ok := list.Find(id.String()); !ok || r.By != "alice" || r.At == 0 {
			t.Errorf("revocation of %s: %+v %v", id, r, ok)
		}
		if !n.gate.isRevoked(id) {
			t.Errorf("the gate does not know %s is revoked", id)
		}
	}
	if _, err := n.RemoveMember(t.Context(), ids[0].String(), "bob"); !errors.Is(err, api.ErrAlreadyRevoked) {
		t.Errorf("a second revocation: %v, want ErrAlreadyRevoked", err)
	}
	if _, err := n.RemoveMember(t.Context(), "not-a-peer-id", "bob"); !errors.Is(err, api.ErrNotMember) {
		t.Errorf("a bad id: %v, want ErrNotMember", err)
	}
	// This node is the only voter: it is removed (refused: it would leave
	// no member), never revoked.
	if did, err := n.RemoveMember(t.Context(), n.host.ID().String(), "bob"); err == nil || did == api.RevokedFollower || n.revokedSelf() != nil {
		t.Errorf("removing the only voter: %q, %v; want refused, not revoked", did, err)
	}
}
