package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ptest "github.com/libp2p/go-libp2p/core/test"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/p2p"
)

// fakePeer answers a blob request (nil: it does not hold the blob).
type fakePeer func(req p2p.BlobRequest) (p2p.BlobAnswer, io.ReadCloser, error)

// fakeNet is the peers a test fetches from, all members, and what the
// fetch did to them.
type fakeNet struct {
	self  peer.ID
	peers map[peer.ID]fakePeer
	// providers are what the DHT names; order is the cluster's order.
	providers []peer.ID

	mu        sync.Mutex
	asked     []peer.ID
	admitted  []peer.ID // asked to Admit, in order
	requests  []p2p.BlobRequest
	penalised []peer.ID
}

func (n *fakeNet) ID() peer.ID { return n.self }

func (n *fakeNet) FetchBlob(_ context.Context, from peer.ID, req p2p.BlobRequest, _ time.Duration) (p2p.BlobAnswer, io.ReadCloser, error) {
	n.mu.Lock()
	n.asked = append(n.asked, from)
	n.requests = append(n.requests, req)
	n.mu.Unlock()
	if fp := n.peers[from]; fp != nil {
		return fp(req)
	}
	return p2p.BlobAnswer{Status: p2p.BlobNotFound}, nil, nil
}

func (n *fakeNet) FindProviders(context.Context, digest.Digest, int) ([]peer.ID, error) {
	return slices.Clone(n.providers), nil
}

// Admit: the peers of the net; those in proves only once asked (a
// follower met through a fetch).
func (n *fakeNet) Admit(_ context.Context, p peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.admitted = append(n.admitted, p)
	_, ok := n.peers[p]
	return ok
}
func (n *fakeNet) Live() []peer.ID { return nil }
func (n *fakeNet) Holders(context.Context, []peer.ID, []digest.Digest) map[digest.Digest][]peer.ID {
	return nil
}
func (n *fakeNet) Order(context.Context, []peer.ID) {}
func (n *fakeNet) Penalise(p peer.ID, _ string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.penalised = append(n.penalised, p)
}

// holds serves blob from the requested offset, passing it through fault.
func holds(blob []byte, fault func([]byte) io.Reader) fakePeer {
	return func(req p2p.BlobRequest) (p2p.BlobAnswer, io.ReadCloser, error) {
		rest := blob[req.Offset:]
		var r io.Reader = bytes.NewReader(rest)
		if fault != nil {
			r = fault(rest)
		}
		return p2p.BlobAnswer{Status: p2p.BlobOK, Size: int64(len(blob))}, io.NopCloser(r), nil
	}
}

func flipped(b []byte) io.Reader {
	c := bytes.Clone(b)
	c[0] ^= 1
	return bytes.NewReader(c)
}

func stopsAfter(n int) func([]byte) io.Reader {
	return func(b []byte) io.Reader {
		return io.MultiReader(bytes.NewReader(b[:n]), errReader{errors.New("connection reset")})
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

func busyPointingTo(to ...peer.ID) fakePeer {
	return func(req p2p.BlobRequest) (p2p.BlobAnswer, io.ReadCloser, error) {
		var redirect []string
		for _, p := range to {
			redirect = append(redirect, p.String())
		}
		return p2p.BlobAnswer{Status: p2p.BlobBusy, Redirect: redirect}, nil, nil
	}
}

// TestPeersFailOver: what each holder does, in the order the cluster
// names them, and which of them the fetch penalises.
func TestPeersFailOver(t *testing.T) {
	t.Parallel()
	blob := bytes.Repeat([]byte("0123456789"), 1000)
	d := digest.FromBytes(blob)
	a, b, c := ptest.RandPeerIDFatal(t), ptest.RandPeerIDFatal(t), ptest.RandPeerIDFatal(t)
	stranger := ptest.RandPeerIDFatal(t) // in no net: Admit refuses it
	tests := []struct {
		name      string
		peers     map[peer.ID]fakePeer
		providers []peer.ID
		hint      []peer.ID
		wantAsked []peer.ID
		// wantOffsets are the offsets of the requests, in order.
		wantOffsets   []int64
		wantPenalised []peer.ID
	}{
		{name: "honest nearest", peers: map[peer.ID]fakePeer{a: holds(blob, nil), b: holds(blob, nil)},
			providers: []peer.ID{a, b}, wantAsked: []peer.ID{a}, wantOffsets: []int64{0}},
		{name: "wrong bytes: penalised, the next one serves", peers: map[peer.ID]fakePeer{a: holds(blob, flipped), b: holds(blob, nil)},
			providers: []peer.ID{a, b}, wantAsked: []peer.ID{a, b}, wantOffsets: []int64{0, 0}, wantPenalised: []peer.ID{a}},
		{name: "stops early: the next one resumes after its bytes", peers: map[peer.ID]fakePeer{a: holds(blob, stopsAfter(4000)), b: holds(blob, nil)},
			providers: []peer.ID{a, b}, wantAsked: []peer.ID{a, b}, wantOffsets: []int64{0, 4000}},
		{name: "busy: its redirect is asked first", peers: map[peer.ID]fakePeer{a: busyPointingTo(c), b: holds(blob, nil), c: holds(blob, nil)},
			providers: []peer.ID{a, b}, wantAsked: []peer.ID{a, c}, wantOffsets: []int64{0, 0}},
		{name: "busy: a stranger it redirects to is never asked", peers: map[peer.ID]fakePeer{a: busyPointingTo(stranger, c), b: holds(blob, nil), c: holds(blob, nil)},
			providers: []peer.ID{a, b}, wantAsked: []peer.ID{a, c}, wantOffsets: []int64{0, 0}},
		{name: "a stranger the DHT names is never asked", peers: map[peer.ID]fakePeer{b: holds(blob, nil)},
			providers: []peer.ID{stranger, b}, wantAsked: []peer.ID{b}, wantOffsets: []int64{0}},
		{name: "hint before the providers", peers: map[peer.ID]fakePeer{a: holds(blob, nil), b: holds(blob, nil)},
			providers: []peer.ID{a}, hint: []peer.ID{b}, wantAsked: []peer.ID{b}, wantOffsets: []int64{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := &fakeNet{self: ptest.RandPeerIDFatal(t), peers: tc.peers, providers: tc.providers}
			src := NewPeers(PeersConfig{Net: net, Providers: net, Cluster: net, Idle: time.Second, Log: testLog(t)})
			store := newStore(t)
			e := New(Config{Partials: store, Sources: []Source{src}, Go: newTestOwner(t).Go, Log: testLog(t)})
			f, err := e.Start(Request{Digest: d, Size: int64(len(blob)), Hint: tc.hint})
			if err != nil {
				t.Fatal(err)
			}
			wait(t, f)
			if f.Err() != nil || !store.Held(d) {
				t.Fatalf("err %v, held %v; want the blob", f.Err(), store.Held(d))
			}
			net.mu.Lock()
			defer net.mu.Unlock()
			if !slices.Equal(net.asked, tc.wantAsked) {
				t.Errorf("asked %v, want %v", net.asked, tc.wantAsked)
			}
			for _, p := range net.asked {
				if !slices.Contains(net.admitted, p) {
					t.Errorf("asked %s without admitting it first", p)
				}
			}
			var offsets []int64
			for _, r := range net.requests {
				offsets = append(offsets, r.Offset)
				if r.CompleteOnly != (r.Offset > 0) {
					t.Errorf("request at offset %d: CompleteOnly %v", r.Offset, r.CompleteOnly)
				}
			}
			if !slices.Equal(offsets, tc.wantOffsets) {
				t.Errorf("offsets %v, want %v", offsets, tc.wantOffsets)
			}
			if !slices.Equal(net.penalised, tc.wantPenalised) {
				t.Errorf("penalised %v, want %v", net.penalised, tc.wantPenalised)
			}
		})
	}
}

// TestPeersGiveUpWhenNobodyHoldsIt: a blob no member serves fails after
// the lookup rounds, and a non-member named by the
// DHT is never asked.
func TestPeersGiveUpWhenNobodyHoldsIt(t *testing.T) {
	t.Parallel()
	member, stranger := ptest.RandPeerIDFatal(t), ptest.RandPeerIDFatal(t)
	net := &fakeNet{self: ptest.RandPeerIDFatal(t), peers: map[peer.ID]fakePeer{member: nil}, providers: []peer.ID{stranger, member}}
	src := NewPeers(PeersConfig{Net: net, Providers: net, Cluster: net, Idle: time.Second, Log: testLog(t)})
	e := New(Config{Partials: newStore(t), Sources: []Source{src}, Go: newTestOwner(t).Go, Log: testLog(t)})
	d := digest.FromString("nobody has it")
	f, err := e.Start(Request{Digest: d, Size: 13})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, f)
	// The last error is the last holder's answer.
	if f.Err() == nil || !strings.Contains(f.Err().Error(), "from peers: peer "+member.String()) {
		t.Fatalf("err = %v, want the member's answer", f.Err())
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	if slices.Contains(net.asked, stranger) {
		t.Error("asked a non-member the DHT named")
	}
	// The member failed, so the cache dropped it; each round looked again.
	if got := len(net.asked); got != lookupRounds {
		t.Errorf("asked %d times, want once per lookup round (%d)", got, lookupRounds)
	}
}
