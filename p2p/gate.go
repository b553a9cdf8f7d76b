package p2p

import (
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Authorizer decides whether peer p may open an inbound stream of protocol
// proto on this host. It is called once per inbound stream, on libp2p's
// goroutine, before a byte of the stream is read, so it must be quick and
// must not block on the network. It may run concurrently with itself.
type Authorizer func(p peer.ID, proto protocol.ID) bool

// SetAuthorizer makes fn the judge of every inbound stream of every
// protocol this package serves: the request/response protocols
// (HandleRequests), blobs (ServeBlobs), Raft (RaftStreamLayer) and the DHT
// (Routing). A refused stream is reset at once, unread. Set it before
// registering handlers; it may be replaced later. Without an authorizer
// every peer is served: that is for tests and tools, a node always sets
// one.
//
// The check lives here, below the handlers, so that no protocol can forget
// it: what a handler receives comes from a peer the authorizer accepted.
func (h *Host) SetAuthorizer(fn Authorizer) {
	if fn == nil {
		h.authz.Store(nil)
		return
	}
	h.authz.Store(&fn)
}

// authorized reports whether p may open an inbound stream of proto.
func (h *Host) authorized(p peer.ID, proto protocol.ID) bool {
	fn := h.authz.Load()
	return fn == nil || (*fn)(p, proto)
}

// RefusedStreams counts the inbound streams refused by the authorizer
// since the host started.
func (h *Host) RefusedStreams() int64 { return h.refused.Load() }

// guard wraps a stream handler of proto with the authorizer check.
func (h *Host) guard(proto protocol.ID, handler network.StreamHandler) network.StreamHandler {
	return func(s network.Stream) {
		p := s.Conn().RemotePeer()
		if !h.authorized(p, proto) {
			h.refused.Add(1)
			// Debug, not Warn: an attacker must not be able to fill the
			// log by opening streams. RefusedStreams counts them.
			h.log.Debug("p2p: refused a stream from a peer that is not a member", "peer", p.String(), "protocol", string(proto))
			_ = s.Reset()
			return
		}
		handler(s)
	}
}

// gatedHost is the host as the DHT sees it: every stream handler the DHT
// registers goes through the authorizer, so a peer that may not use the
// DHT cannot store provider records here, nor ask for any.
type gatedHost struct {
	host.Host
	gate *Host
}

func (g gatedHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	g.Host.SetStreamHandler(pid, g.gate.guard(pid, handler))
}

func (g gatedHost) SetStreamHandlerMatch(pid protocol.ID, match func(protocol.ID) bool, handler network.StreamHandler) {
	g.Host.SetStreamHandlerMatch(pid, match, g.gate.guard(pid, handler))
}

var _ host.Host = gatedHost{}
