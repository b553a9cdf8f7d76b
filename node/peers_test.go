package node

import (
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
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
