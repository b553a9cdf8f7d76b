package p2p

import (
	"errors"
	"sync"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrNoPartitionGater is returned by Host.Partition and Host.Heal when the
// host was not built with a *PartitionGater in Config.Gater.
var ErrNoPartitionGater = errors.New("p2p: host has no PartitionGater")

// PartitionGater is a connection gater that refuses every connection, in
// either direction, to or from blocked peers. It is meant for tests and the
// testnet harness, to cut a node off from some peers at the libp2p layer.
//
// Blocking only stops new connections; existing ones must be closed too
// (Host.Partition does both). The zero value blocks nothing and is ready to
// use; it is safe for concurrent use.
type PartitionGater struct {
	mu      sync.RWMutex
	blocked map[peer.ID]struct{}
}

var _ connmgr.ConnectionGater = (*PartitionGater)(nil)

// NewPartitionGater returns a gater that blocks nothing yet.
func NewPartitionGater() *PartitionGater { return &PartitionGater{} }

// Block refuses new connections with id.
func (g *PartitionGater) Block(id peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.blocked == nil {
		g.blocked = map[peer.ID]struct{}{}
	}
	g.blocked[id] = struct{}{}
}

// Unblock allows connections with id again.
func (g *PartitionGater) Unblock(id peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.blocked, id)
}

// Blocked reports whether id is blocked.
func (g *PartitionGater) Blocked(id peer.ID) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	_, ok := g.blocked[id]
	return ok
}

// InterceptPeerDial refuses dials to blocked peers.
func (g *PartitionGater) InterceptPeerDial(p peer.ID) bool { return !g.Blocked(p) }

// InterceptAddrDial refuses dials to blocked peers.
func (g *PartitionGater) InterceptAddrDial(p peer.ID, _ ma.Multiaddr) bool { return !g.Blocked(p) }

// InterceptAccept allows every inbound connection; the peer is not known
// until the security handshake, where InterceptSecured checks it.
func (g *PartitionGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses connections, inbound or outbound, with blocked peers.
func (g *PartitionGater) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.Blocked(p)
}

// InterceptUpgraded refuses connections with blocked peers.
func (g *PartitionGater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return !g.Blocked(c.RemotePeer()), 0
}

// Partition blocks ids in the host's PartitionGater and closes the
// connections to them. One side is enough to cut a pair: this host refuses
// both its own dials and the other side's (at the security handshake).
func (h *Host) Partition(ids ...peer.ID) error {
	g, ok := h.gater.(*PartitionGater)
	if !ok {
		return ErrNoPartitionGater
	}
	var errs []error
	for _, id := range ids {
		g.Block(id)
		errs = append(errs, h.h.Network().ClosePeer(id))
	}
	return errors.Join(errs...)
}

// Heal unblocks ids in the host's PartitionGater. It does not reconnect:
// the next dial (by Raft, or Connect) does.
func (h *Host) Heal(ids ...peer.ID) error {
	g, ok := h.gater.(*PartitionGater)
	if !ok {
		return ErrNoPartitionGater
	}
	for _, id := range ids {
		g.Unblock(id)
	}
	return nil
}
