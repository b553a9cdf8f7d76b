package p2p

import (
	"context"
	"errors"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
)

func TestPartitionGater(t *testing.T) {
	t.Parallel()
	g := NewPartitionGater()
	a := newTestHost(t, func(c *Config) { c.Gater = g })
	b := newTestHost(t, nil)
	serveEcho(a)
	serveEcho(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, addrOf(t, b, ma.P_TCP)); err != nil {
		t.Fatal(err)
	}
	if err := b.Connect(ctx, addrOf(t, a, ma.P_QUIC_V1)); err != nil {
		t.Fatal(err)
	}
	if err := echo(ctx, a, b.ID()); err != nil {
		t.Fatalf("echo before partition: %v", err)
	}

	if err := a.Partition(b.ID()); err != nil {
		t.Fatalf("Partition: %v", err)
	}
	if !g.Blocked(b.ID()) {
		t.Error("Blocked after Partition: false")
	}
	if n := len(a.LibP2P().Network().ConnsToPeer(b.ID())); n != 0 {
		t.Errorf("%d connections left after Partition", n)
	}
	if err := echo(ctx, a, b.ID()); err == nil {
		t.Error("a -> b after Partition: stream opened")
	}
	if err := echo(ctx, b, a.ID()); err == nil {
		t.Error("b -> a after Partition: stream opened")
	}

	if err := a.Heal(b.ID()); err != nil {
		t.Fatalf("Heal: %v", err)
	}
	if g.Blocked(b.ID()) {
		t.Error("Blocked after Heal: true")
	}
	// b may still be backing off from its failed dial; a redials at once.
	if err := echo(ctx, a, b.ID()); err != nil {
		t.Errorf("a -> b after Heal: %v", err)
	}
	if err := echo(ctx, b, a.ID()); err != nil {
		t.Errorf("b -> a after Heal: %v", err)
	}
}

func TestPartitionWithoutGater(t *testing.T) {
	t.Parallel()
	a, b := newTestHost(t, nil), newTestHost(t, nil)
	if err := a.Partition(b.ID()); !errors.Is(err, ErrNoPartitionGater) {
		t.Errorf("Partition: %v, want ErrNoPartitionGater", err)
	}
	if err := a.Heal(b.ID()); !errors.Is(err, ErrNoPartitionGater) {
		t.Errorf("Heal: %v, want ErrNoPartitionGater", err)
	}
}
