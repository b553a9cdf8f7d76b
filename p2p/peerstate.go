package p2p

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// The few questions about peers and connections that callers would
// otherwise ask the underlying libp2p host (LibP2P): as methods here, the
// node can take the host as a small interface and be tested over a fake.

// Connected reports whether this host has a live connection to p.
func (h *Host) Connected(p peer.ID) bool {
	return h.h.Network().Connectedness(p) == network.Connected
}

// Dial connects to p at the addresses the peerstore knows for it (from
// Connect, RememberPeer or the DHT).
func (h *Host) Dial(ctx context.Context, p peer.ID) error {
	if err := h.h.Connect(ctx, peer.AddrInfo{ID: p}); err != nil {
		return fmt.Errorf("p2p: dial %s: %w", p, err)
	}
	return nil
}

// RememberPeer keeps info's addresses in the peerstore for good, so that a
// later Dial, Request or Raft (which dials by peer id) finds the peer.
func (h *Host) RememberPeer(info peer.AddrInfo) {
	h.h.Peerstore().AddAddrs(info.ID, info.Addrs, peerstore.PermanentAddrTTL)
}

// PrivateKey is this host's identity key (nil if the peerstore lost it),
// which signs what other peers must trust came from this peer id.
func (h *Host) PrivateKey() crypto.PrivKey {
	return h.h.Peerstore().PrivKey(h.h.ID())
}
