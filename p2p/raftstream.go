package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
)

// RaftProtocol is the libp2p protocol id of Raft RPC streams.
const RaftProtocol protocol.ID = "/meshreg/raft/1.0.0"

// raftProtectTag marks Raft peers in the connection manager so that trimming
// never drops a cluster connection.
const raftProtectTag = "meshreg-raft"

// ErrStreamLayerClosed is returned by Accept and Dial after Close.
var ErrStreamLayerClosed = fmt.Errorf("p2p: raft stream layer closed: %w", net.ErrClosed)

// RaftStreamLayer carries hashicorp/raft's NetworkTransport over libp2p
// streams: raft.NewNetworkTransport(layer, maxPool, timeout, logOutput).
//
// A raft.ServerAddress is either a full multiaddr ending in /p2p/<peer id>
// (what Addr returns, so every member of a configuration can dial every
// other one after a leader change) or a bare peer id string, which Dial
// resolves through the peerstore (addresses learned from Host.Connect and
// identify). The Raft server id is the peer id. Each Raft connection is one
// libp2p stream.
//
// Accept returns streams opened by peers; Close removes the protocol handler
// and makes Accept and Dial fail with ErrStreamLayerClosed. All methods are
// safe for concurrent use.
type RaftStreamLayer struct {
	h        host.Host
	addr     string
	incoming chan network.Stream
	done     chan struct{}
	once     sync.Once
}

var _ raft.StreamLayer = (*RaftStreamLayer)(nil)

// NewRaftStreamLayer registers the Raft protocol handler on h. Only one
// stream layer per host can be open at a time.
//
// hashicorp/raft does not check who sends an RPC: any stream Accept
// returns can carry AppendEntries or RequestVote. So inbound streams pass
// h's authorizer (see Host.SetAuthorizer) before they reach Accept; the
// node admits current members, and the peers a joining node is about to
// hear its leader from. Outbound streams (Dial) need no admission.
func NewRaftStreamLayer(h *Host) *RaftStreamLayer {
	l := &RaftStreamLayer{
		h:        h.LibP2P(),
		addr:     h.RaftAddress(),
		incoming: make(chan network.Stream),
		done:     make(chan struct{}),
	}
	l.h.SetStreamHandler(RaftProtocol, h.guard(RaftProtocol, l.handle))
	return l
}

// handle runs on libp2p's goroutine for each inbound stream and hands it to
// Accept, or resets it once the layer is closed.
func (l *RaftStreamLayer) handle(s network.Stream) {
	select {
	case l.incoming <- s:
		l.h.ConnManager().Protect(s.Conn().RemotePeer(), raftProtectTag)
	case <-l.done:
		_ = s.Reset()
	}
}

// Accept waits for a stream opened by a peer and returns it as a net.Conn.
func (l *RaftStreamLayer) Accept() (net.Conn, error) {
	select {
	case s := <-l.incoming:
		return &streamConn{Stream: s}, nil
	case <-l.done:
		return nil, ErrStreamLayerClosed
	}
}

// Close unregisters the protocol handler and unblocks Accept. Streams
// already returned stay open; their owners close them.
func (l *RaftStreamLayer) Close() error {
	l.once.Do(func() {
		l.h.RemoveStreamHandler(RaftProtocol)
		close(l.done)
	})
	return nil
}

// Addr is this host's Raft address: its preferred multiaddr with /p2p/<id>
// (see Host.RaftAddress).
func (l *RaftStreamLayer) Addr() net.Addr { return raftAddr(l.addr) }

// raftAddr is a Raft address as a net.Addr.
type raftAddr string

func (a raftAddr) Network() string { return "libp2p" }
func (a raftAddr) String() string  { return string(a) }

// Dial opens a Raft stream to the peer whose id is address, connecting to it
// first if needed, within timeout.
func (l *RaftStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	select {
	case <-l.done:
		return nil, ErrStreamLayerClosed
	default:
	}
	id, err := l.resolve(string(address))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := l.h.NewStream(ctx, id, RaftProtocol)
	if err != nil {
		return nil, fmt.Errorf("p2p: raft dial %s: %w", id, err)
	}
	l.h.ConnManager().Protect(id, raftProtectTag)
	return &streamConn{Stream: s}, nil
}

// streamConn is a libp2p stream seen as a net.Conn. Read, Write, Close and
// the deadlines are the stream's own.
type streamConn struct {
	network.Stream
}

var _ net.Conn = (*streamConn)(nil)

func (c *streamConn) LocalAddr() net.Addr  { return peerAddr(c.Conn().LocalPeer()) }
func (c *streamConn) RemoteAddr() net.Addr { return peerAddr(c.Conn().RemotePeer()) }

// Close closes the stream. If the remote end is gone (already reset), the
// error is not worth reporting to raft, which only logs it.
func (c *streamConn) Close() error {
	err := c.Stream.Close()
	if errors.Is(err, network.ErrReset) {
		return nil
	}
	return err
}

// peerAddr is a peer id as a net.Addr; String is the peer id.
type peerAddr peer.ID

func (a peerAddr) Network() string { return "libp2p" }
func (a peerAddr) String() string  { return peer.ID(a).String() }

// resolve turns a Raft address into a peer id, recording the addresses of a
// multiaddr form in the peerstore for good.
func (l *RaftStreamLayer) resolve(address string) (peer.ID, error) {
	if !strings.HasPrefix(address, "/") {
		id, err := peer.Decode(address)
		if err != nil {
			return "", fmt.Errorf("p2p: raft address %q is neither a multiaddr nor a peer id: %w", address, err)
		}
		return id, nil
	}
	m, err := ma.NewMultiaddr(address)
	if err != nil {
		return "", fmt.Errorf("p2p: raft address %q: %w", address, err)
	}
	info, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		return "", fmt.Errorf("p2p: raft address %q has no /p2p/<id>: %w", address, err)
	}
	l.h.Peerstore().AddAddrs(info.ID, info.Addrs, peerstore.PermanentAddrTTL)
	return info.ID, nil
}
