package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/p2p"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// tailRequest is the tail protocol's request (consensus/tailwire.go),
// written by hand: a follower that applied through after.
func tailRequest(after uint64) []byte {
	b := append([]byte("meshreg-tail-v1\n"), make([]byte, 12)...)
	binary.BigEndian.PutUint64(b[16:], after)
	binary.BigEndian.PutUint32(b[24:], 1000)
	return b
}

// readTailFrame reads one frame's type and payload.
func readTailFrame(t *testing.T, r io.Reader) (byte, []byte) {
	t.Helper()
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		t.Fatalf("reading a tail frame: %v", err)
	}
	p := make([]byte, binary.BigEndian.Uint32(h[1:]))
	if _, err := io.ReadFull(r, p); err != nil {
		t.Fatalf("reading a tail frame: %v", err)
	}
	return h[0], p
}

// TestMemberServesBoundedFollowers: a real member (badger, Raft, libp2p)
// records the follower it serves a tail to (its status counts it, the
// fleet view lists it with its index and source), and with maxTailClients
// tails served it refuses the next follower, saying why, on the tail
// stream itself.
func TestMemberServesBoundedFollowers(t *testing.T) {
	n := openTestNode(t)
	t.Cleanup(func() { _ = n.Close() })
	waitReady(t, n)
	cfg := p2p.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Logger = tlog.Logger(t, slog.LevelWarn)
	cfg.UserAgent = "meshreg/v0.9.0 ops/7"
	f, err := p2p.NewHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	n.gate.admitFollower(f.ID(), time.Minute) // as a valid pass would
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := f.Connect(ctx, n.host.Addrs()[0].String()+"/p2p/"+n.host.ID().String()); err != nil {
		t.Fatal(err)
	}

	s, err := f.OpenStream(ctx, n.host.ID(), tailProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write(tailRequest(1)); err != nil {
		t.Fatal(err)
	}
	if typ, _ := readTailFrame(t, bufio.NewReader(s)); typ != 1 {
		t.Fatalf("the first frame is of type %d, want the leader (1)", typ)
	}
	deadline := time.Now().Add(5 * time.Second)
	var fl []FleetNode
	// Identify tells the member what the follower runs, shortly after the connection.
	for fl = n.servedFollowers(); len(fl) != 1 || fl[0].Applied < 1 || fl[0].Agent == ""; fl = n.servedFollowers() {
		if time.Now().After(deadline) {
			t.Fatalf("the member serves %+v, want the follower", fl)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if fl[0].ID != f.ID().String() || fl[0].Source != n.host.ID().String() || fl[0].Role != "follower" || fl[0].Version != "v0.9.0" {
		t.Errorf("served follower: %+v", fl[0])
	}
	if st := n.Status(t.Context()).(Status); st.FollowersServed != 1 {
		t.Errorf("status counts %d followers served, want 1", st.FollowersServed)
	}

	// Full: the others of the bound are fakes.
	for range maxTailClients - 1 {
		if _, ok := n.tails.add(f.ID(), time.Now(), nil); !ok {
			t.Fatal("refused below the bound")
		}
	}
	s2, err := f.OpenStream(ctx, n.host.ID(), tailProtocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Write(tailRequest(1)); err != nil {
		t.Fatal(err)
	}
	typ, reason := readTailFrame(t, s2)
	if typ != 7 || !strings.Contains(string(reason), "serves 1024 followers") || !strings.Contains(string(reason), "tail another member") {
		t.Errorf("the follower past the bound got frame %d %q, want a refusal saying why", typ, reason)
	}
}
