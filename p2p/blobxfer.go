package p2p

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"
)

// BlobProtocol carries blob bytes between peers. The fetcher writes one
// length-prefixed JSON BlobRequest; the holder answers with a
// length-prefixed JSON BlobAnswer and, when the answer is BlobOK, the
// blob's bytes from the requested offset to the end, then closes.
//
// The bytes are not trusted: the fetcher verifies the digest (package
// blobstore does, at commit). Peers know each other by libp2p identity,
// and on a private network (cluster key) only keyed peers connect at all.
const BlobProtocol protocol.ID = "/meshreg/blob/1.0.0"

// maxBlobHeader bounds the JSON request and answer.
const maxBlobHeader = 64 << 10

// copyBuf is the size of the buffers bytes move through: large writes keep
// the stream's frames full.
const copyBuf = 1 << 20

// answerTimeout bounds the wait for a holder's answer (not for the bytes
// after it, which the idle timeout governs): a holder answers as soon as it
// has opened a file, so a peer that says nothing this long is gone, or cut
// off behind a connection that still looks open.
const answerTimeout = 5 * time.Second

// BlobRequest asks a peer for blob Digest from byte Offset.
type BlobRequest struct {
	Digest digest.Digest `json:"digest"`
	Offset int64         `json:"offset,omitempty"`
	// CompleteOnly asks only for a complete, verified copy: a peer that is
	// still fetching the blob answers BlobNotFound.
	CompleteOnly bool `json:"complete_only,omitempty"`
	// NoRedirect asks the peer to serve even when busy.
	NoRedirect bool `json:"no_redirect,omitempty"`
}

// BlobStatus says whether bytes follow an answer.
type BlobStatus string

const (
	BlobOK       BlobStatus = "ok"        // the bytes follow
	BlobNotFound BlobStatus = "not_found" // the peer neither holds nor is fetching it
	// BlobBusy: the peer is already sending this blob to others and names
	// peers that are fetching it from it (Redirect), which serve what they
	// already have and wait for the rest. This is what turns many
	// simultaneous first pulls into a chain instead of a star.
	BlobBusy    BlobStatus = "busy"
	BlobRefused BlobStatus = "refused" // not a member, or a bad request (Message says)
)

// BlobAnswer heads a response on BlobProtocol.
type BlobAnswer struct {
	Status   BlobStatus `json:"status"`
	Size     int64      `json:"size,omitempty"` // the whole blob's size
	Message  string     `json:"message,omitempty"`
	Redirect []string   `json:"redirect,omitempty"` // peer ids to ask instead
	// RedirectAddrs are addresses of the peers in Redirect (multiaddrs
	// ending in /p2p/<id>), filled in by the host that answers from its
	// peerstore: the asker may never have met them (a follower of the
	// metadata knows the members' addresses from the configuration, not
	// other followers'), and a peer id alone cannot be dialled. The
	// fetcher keeps those of peers named in Redirect for redirectAddrTTL;
	// a wrong one only fails its dial (libp2p checks the peer's identity).
	RedirectAddrs []string `json:"redirect_addrs,omitempty"`
	// Depth is 0 when the peer serves a complete copy, else how many hops
	// its bytes are away from one (it is fetching from a peer of depth
	// Depth-1). A fetcher's own depth is its source's plus one, which keeps
	// chains of peers serving one another free of cycles.
	Depth int `json:"depth,omitempty"`
}

// BlobServer answers one blob request from peer from. For BlobOK it returns
// the bytes from req.Offset on, which the host sends and then closes.
type BlobServer func(ctx context.Context, from peer.ID, req BlobRequest) (BlobAnswer, io.ReadCloser)

// ServeBlobs answers BlobProtocol with fn. A stream on which nothing moves
// for idle is reset, so a stalled fetcher does not pin a reader forever.
// Streams from peers the authorizer refuses are reset unread.
func (h *Host) ServeBlobs(idle time.Duration, fn BlobServer) {
	h.h.SetStreamHandler(BlobProtocol, h.guard(BlobProtocol, func(s network.Stream) {
		_ = s.SetReadDeadline(time.Now().Add(idle))
		var req BlobRequest
		msg, err := readMessage(s, maxBlobHeader)
		if err == nil {
			err = json.Unmarshal(msg, &req)
		}
		if err != nil {
			_ = s.Reset()
			return
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		answer, body := fn(ctx, s.Conn().RemotePeer(), req)
		if body != nil {
			defer body.Close()
		}
		if answer.Status == BlobBusy {
			answer.RedirectAddrs = h.redirectAddrs(answer.Redirect)
		}
		w := &idleWriter{s: s, idle: idle}
		head, _ := json.Marshal(answer)
		if err := writeMessage(w, head); err != nil || answer.Status != BlobOK || body == nil {
			if err != nil {
				_ = s.Reset()
			} else {
				_ = s.Close()
			}
			return
		}
		buf := make([]byte, copyBuf)
		if _, err := io.CopyBuffer(w, onlyReader{body}, buf); err != nil {
			_ = s.Reset() // the fetcher sees a short body, never a complete one
			return
		}
		_ = s.Close()
	}))
}

// FetchBlob asks peer from for a blob. With BlobOK the returned body
// carries the bytes from req.Offset; the caller closes it. A read that
// waits longer than idle for the next bytes fails, and ctx bounds the whole
// transfer.
func (h *Host) FetchBlob(ctx context.Context, from peer.ID, req BlobRequest, idle time.Duration) (BlobAnswer, io.ReadCloser, error) {
	fail := func(err error) (BlobAnswer, io.ReadCloser, error) {
		return BlobAnswer{}, nil, fmt.Errorf("p2p: fetch %s from %s: %w", req.Digest, from, err)
	}
	s, err := h.openStream(ctx, from, BlobProtocol)
	if err != nil {
		return fail(err)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	body := &blobBody{s: s, idle: idle, stop: stop}
	msg, _ := json.Marshal(req)
	_ = s.SetDeadline(time.Now().Add(min(idle, answerTimeout)))
	if err := writeMessage(s, msg); err != nil {
		body.abort()
		return fail(fmt.Errorf("sending the request: %w", err))
	}
	if err := s.CloseWrite(); err != nil {
		body.abort()
		return fail(err)
	}
	head, err := readMessage(s, maxBlobHeader)
	var answer BlobAnswer
	if err == nil {
		err = json.Unmarshal(head, &answer)
	}
	if err != nil {
		body.abort()
		return fail(fmt.Errorf("reading the answer: %w", err))
	}
	if answer.Status == BlobBusy {
		h.keepRedirectAddrs(answer)
	}
	if answer.Status != BlobOK {
		body.Close()
		return answer, nil, nil
	}
	return answer, body, nil
}

const (
	// maxRedirectPeers and maxAddrsPerRedirect bound the addresses a busy
	// answer carries, and those a fetcher keeps from one.
	maxRedirectPeers    = 16
	maxAddrsPerRedirect = 4
	// maxRedirectAddrLen bounds one address a fetcher parses.
	maxRedirectAddrLen = 256
	// redirectAddrTTL is how long a fetcher keeps an address learned from
	// a redirect: long enough to dial it for this fetch.
	redirectAddrTTL = 2 * time.Minute
)

// redirectAddrs are the addresses this host knows of the peers in ids,
// as multiaddrs with /p2p/<id>, at most maxAddrsPerRedirect for each of
// the first maxRedirectPeers.
func (h *Host) redirectAddrs(ids []string) []string {
	var out []string
	for _, s := range ids[:min(len(ids), maxRedirectPeers)] {
		id, err := peer.Decode(s)
		if err != nil {
			continue
		}
		addrs := h.h.Peerstore().Addrs(id)
		infos, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: id, Addrs: addrs[:min(len(addrs), maxAddrsPerRedirect)]})
		if err != nil {
			continue
		}
		for _, a := range infos {
			out = append(out, a.String())
		}
	}
	return out
}

// keepRedirectAddrs keeps, for redirectAddrTTL, the addresses a busy
// answer gives for the peers it names in Redirect, so that the fetcher can
// dial them; addresses of other peers, past the bounds or unreadable are
// dropped.
func (h *Host) keepRedirectAddrs(answer BlobAnswer) {
	named := map[peer.ID]int{}
	for _, s := range answer.Redirect[:min(len(answer.Redirect), maxRedirectPeers)] {
		if id, err := peer.Decode(s); err == nil && id != h.h.ID() {
			named[id] = 0
		}
	}
	for _, s := range answer.RedirectAddrs[:min(len(answer.RedirectAddrs), maxRedirectPeers*maxAddrsPerRedirect)] {
		if len(s) > maxRedirectAddrLen {
			continue
		}
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			continue
		}
		info, err := peer.AddrInfoFromP2pAddr(m)
		if err != nil {
			continue
		}
		count, ok := named[info.ID]
		if !ok || count >= maxAddrsPerRedirect {
			continue
		}
		named[info.ID] = count + len(info.Addrs)
		h.h.Peerstore().AddAddrs(info.ID, info.Addrs, redirectAddrTTL)
	}
}

// blobBody is the byte stream of an answer.
type blobBody struct {
	s    network.Stream
	idle time.Duration
	stop func() bool
	eof  bool
}

func (b *blobBody) Read(p []byte) (int, error) {
	_ = b.s.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.s.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof = true
	}
	return n, err
}

// Close ends the stream; one not read to the end is reset, telling the
// sender to stop.
func (b *blobBody) Close() error {
	if !b.eof {
		b.abort()
		return nil
	}
	b.stop()
	return b.s.Close()
}

func (b *blobBody) abort() {
	b.stop()
	_ = b.s.Reset()
}

// idleWriter moves the write deadline forward before every write.
type idleWriter struct {
	s    network.Stream
	idle time.Duration
}

func (w *idleWriter) Write(p []byte) (int, error) {
	_ = w.s.SetWriteDeadline(time.Now().Add(w.idle))
	return w.s.Write(p)
}

// onlyReader hides a reader's WriterTo and other extras, so CopyBuffer
// uses the large buffer it is given.
type onlyReader struct{ io.Reader }
