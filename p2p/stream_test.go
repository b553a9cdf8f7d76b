package p2p

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// TestStreamsEchoAndPassTheAuthorizer: a long-lived stream carries bytes
// both ways until the handler returns; a peer the authorizer refuses gets
// a reset and the handler never runs.
func TestStreamsEchoAndPassTheAuthorizer(t *testing.T) {
	server := newTestHost(t, nil)
	client := newTestHost(t, nil)
	if err := client.Connect(context.Background(), addrOf(t, server, 0x06)); err != nil {
		t.Fatal(err)
	}
	var allowed atomic.Bool
	server.SetAuthorizer(func(p peer.ID, proto protocol.ID) bool { return allowed.Load() && p == client.ID() })
	const proto protocol.ID = "/meshreg/test/stream/1.0.0"
	var handled atomic.Int64
	server.HandleStreams(proto, func(from peer.ID, s io.ReadWriteCloser) {
		handled.Add(1)
		if from != client.ID() {
			t.Errorf("handler got a stream from %s, want %s", from, client.ID())
		}
		buf := make([]byte, 5)
		for range 2 { // two messages on one stream, echoed
			if _, err := io.ReadFull(s, buf); err != nil {
				return
			}
			if _, err := s.Write(buf); err != nil {
				return
			}
		}
		_ = s.Close()
	})
	exchange := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := client.OpenStream(ctx, server.ID(), proto)
		if err != nil {
			return err
		}
		defer s.Close()
		if d, ok := s.(interface{ SetDeadline(time.Time) error }); !ok {
			t.Error("the stream has no deadlines")
		} else {
			_ = d.SetDeadline(time.Now().Add(5 * time.Second))
		}
		for _, msg := range []string{"hello", "again"} {
			if _, err := s.Write([]byte(msg)); err != nil {
				return err
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(s, got); err != nil {
				return err
			}
			if string(got) != msg {
				t.Errorf("echo %q, want %q", got, msg)
			}
		}
		return nil
	}
	if err := exchange(); err == nil {
		t.Fatal("a refused peer exchanged on a stream")
	}
	if handled.Load() != 0 {
		t.Fatal("the handler ran for a refused peer")
	}
	allowed.Store(true)
	if err := exchange(); err != nil {
		t.Fatalf("an accepted peer: %v", err)
	}
	if handled.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", handled.Load())
	}
}
