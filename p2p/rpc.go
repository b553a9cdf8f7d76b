package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// A request/response exchange on a stream of its own: the caller writes one
// length-prefixed message and closes its side, the handler answers with one
// length-prefixed message. Messages are small control messages (a Raft
// command of at most a few MiB, a join request); blobs never travel this way.

// HandlerFunc answers one request from peer from.
type HandlerFunc func(ctx context.Context, from peer.ID, req []byte) []byte

// HandleRequests answers requests on proto with fn, refusing requests over
// maxLen bytes. Each request runs on its own goroutine, bounded by timeout.
// Streams from peers the authorizer refuses are reset unread (see
// SetAuthorizer).
func (h *Host) HandleRequests(proto protocol.ID, maxLen int, timeout time.Duration, fn HandlerFunc) {
	h.h.SetStreamHandler(proto, h.guard(proto, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(timeout))
		req, err := readMessage(s, maxLen)
		if err != nil {
			_ = s.Reset()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := writeMessage(s, fn(ctx, s.Conn().RemotePeer(), req)); err != nil {
			_ = s.Reset()
		}
	}))
}

// openTimeout bounds opening a stream (dialing if needed, negotiating the
// protocol), whatever the exchange's own deadline: a peer whose connection
// is silently dead (cut by a partition) fails fast instead of holding a
// long request until its deadline.
const openTimeout = 10 * time.Second

// Request sends req to peer to on proto and returns the answer, at most
// maxLen bytes. ctx bounds the whole exchange; opening the stream takes at
// most openTimeout.
func (h *Host) Request(ctx context.Context, to peer.ID, proto protocol.ID, req []byte, maxLen int) ([]byte, error) {
	s, err := h.openStream(ctx, to, proto)
	if err != nil {
		return nil, fmt.Errorf("p2p: request %s to %s: %w", proto, to, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if err := writeMessage(s, req); err != nil {
		return nil, fmt.Errorf("p2p: request %s to %s: sending: %w", proto, to, err)
	}
	if err := s.CloseWrite(); err != nil {
		return nil, fmt.Errorf("p2p: request %s to %s: %w", proto, to, err)
	}
	resp, err := readMessage(s, maxLen)
	if err != nil {
		return nil, fmt.Errorf("p2p: request %s to %s: reading the answer: %w", proto, to, err)
	}
	return resp, nil
}

func writeMessage(w io.Writer, msg []byte) error {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(msg)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err := w.Write(msg)
	return err
}

// readAhead is how much of a message readMessage allocates before its
// bytes arrive; past it the buffer grows only as bytes are received.
const readAhead = 64 << 10

// readMessage reads one length-prefixed message of at most maxLen bytes.
// The length is the sender's claim: memory is spent only on bytes that
// actually arrive (the buffer grows as they do), so a peer that claims
// 32 MiB and sends nothing costs this node at most readAhead.
func readMessage(r io.Reader, maxLen int) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := int64(binary.BigEndian.Uint32(n[:]))
	if size > int64(maxLen) {
		return nil, fmt.Errorf("message of %d bytes exceeds the limit of %d", size, maxLen)
	}
	buf := bytes.NewBuffer(make([]byte, 0, min(size, readAhead)))
	got, err := buf.ReadFrom(io.LimitReader(r, size))
	if err != nil {
		return nil, err
	}
	if got < size {
		return nil, fmt.Errorf("message cut short after %d of %d bytes: %w", got, size, io.ErrUnexpectedEOF)
	}
	return buf.Bytes(), nil
}

// openStream opens a stream to peer to on proto within openTimeout.
func (h *Host) openStream(ctx context.Context, to peer.ID, proto protocol.ID) (network.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, openTimeout)
	defer cancel()
	return h.h.NewStream(ctx, to, proto)
}
