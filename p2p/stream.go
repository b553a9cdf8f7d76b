package p2p

import (
	"context"
	"fmt"
	"io"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Long-lived streams: unlike the request/response exchange (rpc.go), both
// ends keep the stream open and speak a protocol of their own on it (the
// metadata log tail). The handler owns the stream and closes it.

// StreamHandler serves one inbound stream from peer from until it returns;
// the stream is reset if the handler leaves it open.
type StreamHandler func(from peer.ID, s io.ReadWriteCloser)

// HandleStreams serves proto with fn, each stream on its own goroutine.
// Streams from peers the authorizer refuses are reset unread (see
// SetAuthorizer). The stream fn gets also has read and write deadlines
// (SetReadDeadline, SetWriteDeadline), for a caller that asserts them.
func (h *Host) HandleStreams(proto protocol.ID, fn StreamHandler) {
	h.h.SetStreamHandler(proto, h.guard(proto, func(s network.Stream) {
		defer func() { _ = s.Reset() }() // a no-op once fn closed it
		fn(s.Conn().RemotePeer(), s)
	}))
}

// OpenStream opens a stream of proto to peer to, dialing it if needed,
// within openTimeout; ctx bounds only the opening. The caller closes the
// stream; it has deadlines like the ones HandleStreams gives.
func (h *Host) OpenStream(ctx context.Context, to peer.ID, proto protocol.ID) (io.ReadWriteCloser, error) {
	s, err := h.openStream(ctx, to, proto)
	if err != nil {
		return nil, fmt.Errorf("p2p: opening a %s stream to %s: %w", proto, to, err)
	}
	return s, nil
}
