package node

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

func TestNearestFirstOrdersByZoneRegionThenRoundTrip(t *testing.T) {
	b := newPeerBook(peerLabels{Region: "eu", Zone: "eu-a"})
	b.learn("far", peerLabels{Region: "us", Zone: "us-a"}, time.Millisecond)
	b.learn("region-slow", peerLabels{Region: "eu", Zone: "eu-b"}, 9*time.Millisecond)
	b.learn("region-fast", peerLabels{Region: "eu", Zone: "eu-b"}, 2*time.Millisecond)
	b.learn("zone", peerLabels{Region: "eu", Zone: "eu-a"}, 50*time.Millisecond)
	b.learn("liar", peerLabels{Region: "eu", Zone: "eu-a"}, time.Millisecond)
	b.penalise("liar")

	peers := []peer.ID{"liar", "unknown", "far", "region-slow", "zone", "region-fast"}
	b.nearestFirst(peers)
	want := []peer.ID{"zone", "region-fast", "region-slow", "far", "unknown", "liar"}
	if !slices.Equal(peers, want) {
		t.Fatalf("nearestFirst = %v, want %v", peers, want)
	}
	if g := b.nearestGroup(peers); g != 1 {
		t.Errorf("nearestGroup = %d, want 1 (only the same-zone peer)", g)
	}
	if g := b.nearestGroup(peers[1:]); g != 2 {
		t.Errorf("nearestGroup of the region peers = %d, want 2", g)
	}
}

func TestSpreadFirstPutsOtherZonesFirst(t *testing.T) {
	b := newPeerBook(peerLabels{Region: "eu", Zone: "eu-a"})
	b.learn("same", peerLabels{Region: "eu", Zone: "eu-a"}, time.Millisecond)
	b.learn("other", peerLabels{Region: "eu", Zone: "eu-b"}, 5*time.Millisecond)
	peers := []peer.ID{"same", "other"}
	b.spreadFirst(peers)
	if peers[0] != "other" {
		t.Fatalf("spreadFirst = %v: a new copy should go to another zone first", peers)
	}
}

func TestPenaltyShowsInTheSnapshotAndExpires(t *testing.T) {
	b := newPeerBook(peerLabels{})
	b.penalise("liar")
	snap := b.snapshot()
	if len(snap) != 1 || snap[0].PenalisedUntil == nil {
		t.Fatalf("snapshot = %+v, want the liar penalised", snap)
	}
	b.penalised["liar"] = time.Now().Add(-time.Second)
	if snap := b.snapshot(); snap[0].PenalisedUntil != nil {
		t.Fatalf("an expired penalty still shows: %+v", snap)
	}
	peers := []peer.ID{"liar", "x"}
	b.nearestFirst(peers)
	if peers[0] != "liar" {
		t.Fatalf("an expired penalty still ranks the peer last: %v", peers)
	}
}

// TestMeshAsksABoundedSampleInTurn: each mesh round asks at most
// meshSample members, in turn, so that a node's idle cost does not grow
// with the cluster; every member is still asked within the rounds the
// live window spans, so one that answers stays live between its turns, and
// one that stops answering drops out within that window.
func TestMeshAsksABoundedSampleInTurn(t *testing.T) {
	b := newPeerBook(peerLabels{})
	var members []string
	for i := range 100 {
		members = append(members, peer.ID(fmt.Sprintf("m%03d", i)).String())
	}
	rounds := (len(members) + meshSample - 1) / meshSample
	asked := map[string]int{}
	for range rounds {
		pick := b.meshPick(members)
		if len(pick) > meshSample {
			t.Fatalf("a round asks %d of %d members, want at most %d", len(pick), len(members), meshSample)
		}
		for _, m := range pick {
			asked[m]++
		}
	}
	for _, m := range members {
		if asked[m] == 0 {
			t.Fatalf("member %s not asked in %d rounds", m, rounds)
		}
	}
	if w := b.window(); w < time.Duration(rounds)*meshEvery || w > 4*time.Duration(rounds)*meshEvery {
		t.Errorf("live window %v with %d members asked %d a round: want about 3 rounds of turns (%v each)", w, len(members), meshSample, time.Duration(rounds)*meshEvery)
	}
	now := time.Now()
	b.learn("m000", peerLabels{}, time.Millisecond)
	if !b.answered("m000", now.Add(time.Duration(rounds)*meshEvery)) {
		t.Error("a member that answered one turn ago counts as silent before its next turn")
	}
	if b.answered("m000", now.Add(b.window()+time.Second)) {
		t.Error("a member silent for longer than the live window still counts as live")
	}

	// A small cluster is asked whole every round, as before: a window of
	// three rounds.
	small := newPeerBook(peerLabels{})
	if pick := small.meshPick(members[:5]); len(pick) != 5 {
		t.Errorf("5 members: a round asks %d, want all 5", len(pick))
	}
	if w := small.window(); w != 3*meshEvery {
		t.Errorf("5 members: live window %v, want %v", w, 3*meshEvery)
	}
}

// TestClaimServingIsOneStep: of two peers asking for a blob at once, one
// takes the serving slot and the other is redirected to it, even while the
// first has not been sent a byte yet (the blob is being opened and
// hashed); an insisting asker is served anyway; a released slot is free.
func TestClaimServingIsOneStep(t *testing.T) {
	t.Parallel()
	n := &Node{serving: map[digest.Digest]map[peer.ID]int{}, peers: newPeerBook(peerLabels{})}
	d := digest.FromString("a blob")
	_, a := newTestIdentity(t)
	_, b := newTestIdentity(t)
	_, c := newTestIdentity(t)
	releaseA, _ := n.claimServing(d, a, true)
	if releaseA == nil {
		t.Fatal("the first asker was refused the free slot")
	}
	releaseB, others := n.claimServing(d, b, true)
	if releaseB != nil || len(others) != 1 || others[0] != a.String() {
		t.Fatalf("the second asker: claimed %v, redirected to %v; want a redirect to %s", releaseB != nil, others, a)
	}
	releaseC, _ := n.claimServing(d, c, false)
	if releaseC == nil {
		t.Fatal("an insisting asker (NoRedirect) was refused")
	}
	releaseA()
	releaseC()
	releaseB, _ = n.claimServing(d, b, true)
	if releaseB == nil {
		t.Fatal("the slot is still taken after its release")
	}
	releaseB()
	if len(n.serving) != 0 {
		t.Errorf("serving records left after every release: %v", n.serving)
	}
	// a was sent the whole blob: for servedLately, askers are redirected
	// to it rather than served, unless they insist.
	n.noteServed(d, a)
	if release, others := n.claimServing(d, b, true); release != nil || len(others) != 1 || others[0] != a.String() {
		t.Errorf("after a was sent it whole: claimed %v, redirected to %v; want a redirect to %s", release != nil, others, a)
	}
	if release, _ := n.claimServing(d, a, true); release == nil {
		t.Error("a, asking again (it dropped its copy), was redirected to itself")
	} else {
		release()
	}
	if release, _ := n.claimServing(d, b, false); release == nil {
		t.Error("an insisting asker was refused")
	} else {
		release()
	}
	// Not to a peer known to be in another zone than the asker.
	n.peers.place(a, peerLabels{Zone: "z1"})
	n.peers.place(b, peerLabels{Zone: "z2"})
	if release, _ := n.claimServing(d, b, true); release == nil {
		t.Error("an asker was redirected to a peer in another zone")
	} else {
		release()
	}
	for range 2 * maxServedPeers {
		_, p := newTestIdentity(t)
		n.noteServed(d, p)
	}
	if got := len(n.served[d]); got != maxServedPeers {
		t.Errorf("%d peers remembered for one blob, want at most %d", got, maxServedPeers)
	}
}
