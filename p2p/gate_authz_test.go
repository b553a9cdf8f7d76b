package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
)

// TestAuthorizerGuardsEveryProtocol: a peer the authorizer refuses gets
// no answer on request/response protocols, blobs or Raft, and the
// handlers never run; an accepted peer is served.
func TestAuthorizerGuardsEveryProtocol(t *testing.T) {
	server := newTestHost(t, nil)
	client := newTestHost(t, nil)
	if err := client.Connect(context.Background(), addrOf(t, server, 0x06)); err != nil { // TCP
		t.Fatal(err)
	}
	var allowed atomic.Bool
	var asked atomic.Int64
	server.SetAuthorizer(func(p peer.ID, proto protocol.ID) bool {
		asked.Add(1)
		return allowed.Load() && p == client.ID()
	})
	var handled atomic.Int64
	const ctl protocol.ID = "/meshreg/test/ctl/1.0.0"
	server.HandleRequests(ctl, 1<<10, 5*time.Second, func(ctx context.Context, from peer.ID, req []byte) []byte {
		handled.Add(1)
		return []byte("ok")
	})
	server.ServeBlobs(5*time.Second, func(ctx context.Context, from peer.ID, req BlobRequest) (BlobAnswer, io.ReadCloser) {
		handled.Add(1)
		return BlobAnswer{Status: BlobNotFound}, nil
	})
	layer := NewRaftStreamLayer(server)
	defer layer.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := layer.Accept(); err == nil {
			accepted <- struct{}{}
			_ = c.Close()
		}
	}()
	clientLayer := NewRaftStreamLayer(client)
	defer clientLayer.Close()

	try := func() (ctlErr, blobErr error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, ctlErr = client.Request(ctx, server.ID(), ctl, []byte("hi"), 1<<10)
		_, body, blobErr := client.FetchBlob(ctx, server.ID(), BlobRequest{Digest: digest.FromString("x")}, 5*time.Second)
		if body != nil {
			body.Close()
		}
		return ctlErr, blobErr
	}

	ctlErr, blobErr := try()
	if ctlErr == nil || blobErr == nil {
		t.Fatalf("a refused peer was answered: request err %v, blob err %v", ctlErr, blobErr)
	}
	conn, err := clientLayer.Dial(raft.ServerAddress(server.ID().String()), 5*time.Second)
	if err == nil {
		// The stream opens lazily; the refusal shows as a reset on use.
		_, _ = conn.Write([]byte{0})
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		_ = conn.Close()
	}
	if err == nil {
		t.Fatal("a refused peer's Raft stream stayed open")
	}
	select {
	case <-accepted:
		t.Fatal("a refused peer's Raft stream reached Accept")
	case <-time.After(200 * time.Millisecond):
	}
	if handled.Load() != 0 {
		t.Fatalf("handlers ran %d times for a refused peer", handled.Load())
	}
	if server.RefusedStreams() < 3 || asked.Load() < 3 {
		t.Fatalf("refused %d streams, authorizer asked %d times; want >= 3", server.RefusedStreams(), asked.Load())
	}

	allowed.Store(true)
	ctlErr, blobErr = try()
	if ctlErr != nil || blobErr != nil {
		t.Fatalf("an accepted peer was refused: request err %v, blob err %v", ctlErr, blobErr)
	}
	conn, err = clientLayer.Dial(raft.ServerAddress(server.ID().String()), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte{0}); err != nil { // negotiation is lazy
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("an accepted peer's Raft stream never reached Accept")
	}
}

// claimReader claims a message of claim bytes and then sends only what
// it has.
func claimReader(claim uint32, have []byte) io.Reader {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], claim)
	return io.MultiReader(bytes.NewReader(n[:]), bytes.NewReader(have))
}

// TestReadMessageCostsOnlyWhatArrives: a message that claims 32 MiB and
// sends 10 bytes allocates about nothing; a complete message still reads
// whole, and an over-long claim is refused.
func TestReadMessageCostsOnlyWhatArrives(t *testing.T) {
	const claim = 32 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 8 {
		_, err := readMessage(claimReader(claim, []byte("0123456789")), claim)
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("short message: err %v, want io.ErrUnexpectedEOF", err)
		}
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
		t.Fatalf("8 claims of 32 MiB with 10 bytes each allocated %d MiB", grew>>20)
	}

	want := bytes.Repeat([]byte("m"), 3<<20+7)
	got, err := readMessage(claimReader(uint32(len(want)), want), claim)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("whole message: %d bytes, err %v; want %d bytes", len(got), err, len(want))
	}
	if _, err := readMessage(claimReader(claim+1, nil), claim); err == nil {
		t.Fatal("a claim over the limit was accepted")
	}
}

// TestInboundStreamsPerPeerBounded: one peer cannot hold more than
// MaxInboundStreamsPerPeer streams of one protocol open on a host; the
// rest are refused by the resource manager before the handler runs.
func TestInboundStreamsPerPeerBounded(t *testing.T) {
	server := newTestHost(t, nil)
	client := newTestHost(t, nil)
	if err := client.Connect(context.Background(), addrOf(t, server, 0x06)); err != nil {
		t.Fatal(err)
	}
	const proto protocol.ID = "/meshreg/test/hold/1.0.0"
	release := make(chan struct{})
	var inHandler, peak atomic.Int64
	server.HandleRequests(proto, 1<<10, 30*time.Second, func(ctx context.Context, from peer.ID, req []byte) []byte {
		n := inHandler.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		inHandler.Add(-1)
		return nil
	})
	const tries = MaxInboundStreamsPerPeer + 36
	errs := make(chan error, tries)
	for range tries {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := client.Request(ctx, server.ID(), proto, []byte("hold"), 1<<10)
			errs <- err
		}()
	}
	// Every stream either reaches the handler or is refused: wait until
	// the refusals are in, then let the held ones go.
	refused := 0
	deadline := time.After(20 * time.Second)
	for int(inHandler.Load())+refused < tries {
		select {
		case err := <-errs:
			if err == nil {
				t.Fatal("a request finished while every handler is held")
			}
			refused++
		case <-deadline:
			t.Fatalf("after 20s: %d streams in the handler, %d refused, of %d", inHandler.Load(), refused, tries)
		case <-time.After(10 * time.Millisecond):
		}
	}
	close(release)
	for range tries - refused {
		<-errs
	}
	t.Logf("%d streams opened at once: %d served concurrently, %d refused", tries, peak.Load(), refused)
	if peak.Load() > MaxInboundStreamsPerPeer || peak.Load() == 0 {
		t.Fatalf("%d streams of one peer were served concurrently, want 1..%d", peak.Load(), MaxInboundStreamsPerPeer)
	}
}
