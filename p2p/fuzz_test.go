package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet/tlog"
)

// frame is msg as writeMessage sends it.
func frame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

// FuzzReadMessage reads arbitrary bytes as one request/response message:
// never a panic, never more than maxLen, exactly the framed bytes, and
// memory taken in proportion to the bytes that arrive, not to the length
// the peer claims (a peer that claims 32 MiB and sends nothing must not
// cost 32 MiB).
func FuzzReadMessage(f *testing.F) {
	f.Add(frame([]byte(`{"op":"join","id":"x","address":"/ip4/127.0.0.1/tcp/1"}`)), uint32(64<<10))
	f.Add(frame(nil), uint32(0))
	f.Add(frame([]byte("abc"))[:5], uint32(64<<10))
	f.Add(frame(make([]byte, 100)), uint32(99))
	f.Add([]byte{0, 0}, uint32(10))
	// A non-member's forward stream that claims 32 MiB and sends 4 bytes.
	f.Add(append(binary.BigEndian.AppendUint32(nil, 32<<20), "evil"...), uint32(32<<20))
	f.Fuzz(func(t *testing.T, b []byte, maxLen uint32) {
		limit := int(maxLen % (32<<20 + 1))
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		msg, err := readMessage(bytes.NewReader(b), limit)
		runtime.ReadMemStats(&ms)
		if alloc := ms.TotalAlloc - before; alloc > 1<<20+4*uint64(len(b)) {
			t.Fatalf("reading a message of %d bytes (limit %d) allocated %d bytes (err %v)", len(b), limit, alloc, err)
		}
		if err != nil {
			if len(b) >= 4 && int(binary.BigEndian.Uint32(b)) <= limit && len(b)-4 >= int(binary.BigEndian.Uint32(b)) {
				t.Fatalf("readMessage refused a complete message of %d bytes (limit %d): %v", binary.BigEndian.Uint32(b), limit, err)
			}
			return
		}
		if len(msg) > limit {
			t.Fatalf("readMessage returned %d bytes over the limit %d", len(msg), limit)
		}
		if !bytes.HasPrefix(b, frame(msg)) {
			t.Fatalf("readMessage(%.100q) = %.100q, not the framed bytes", b, msg)
		}
	})
}

// blobPeers is a holder that serves blobs, a liar that answers fetches with
// whatever bytes the fuzzer chose, and a fetcher connected to both: three
// real libp2p hosts on loopback.
type blobPeers struct {
	holder, liar, fetcher *Host

	mu      sync.Mutex
	gotReq  *BlobRequest // what the holder's BlobServer was handed
	lie     []byte       // what the liar answers
	blob    []byte
	blobDig digest.Digest
}

func newBlobPeers(f *testing.F) *blobPeers {
	f.Helper()
	quiet := func(c *Config) { c.Logger = tlog.Logger(f, slog.LevelError); c.ListenAddrs = c.ListenAddrs[:1] }
	p := &blobPeers{holder: newTestHost(f, quiet), liar: newTestHost(f, quiet), fetcher: newTestHost(f, quiet)}
	p.blob = []byte("the bytes of a small blob")
	p.blobDig = digest.FromBytes(p.blob)
	p.holder.ServeBlobs(2*time.Second, func(ctx context.Context, from peer.ID, req BlobRequest) (BlobAnswer, io.ReadCloser) {
		p.mu.Lock()
		p.gotReq = &req
		p.mu.Unlock()
		if req.Digest != p.blobDig || req.Offset < 0 || req.Offset > int64(len(p.blob)) {
			return BlobAnswer{Status: BlobNotFound}, nil
		}
		return BlobAnswer{Status: BlobOK, Size: int64(len(p.blob))}, io.NopCloser(bytes.NewReader(p.blob[req.Offset:]))
	})
	p.liar.LibP2P().SetStreamHandler(BlobProtocol, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := readMessage(s, maxBlobHeader); err != nil {
			_ = s.Reset()
			return
		}
		p.mu.Lock()
		lie := p.lie
		p.mu.Unlock()
		_, _ = s.Write(lie)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, h := range []*Host{p.holder, p.liar} {
		if err := p.fetcher.Connect(ctx, addrOf(f, h, ma.P_TCP)); err != nil {
			f.Fatal(err)
		}
	}
	return p
}

// FuzzBlobProtocol drives both decoders of the blob protocol over real
// streams. asHolder: the fuzzed bytes are a request sent to a holder, which
// must hand its BlobServer exactly the request they encode (or refuse them)
// and answer within its idle bound. Otherwise the bytes are a peer's answer
// to FetchBlob, which must return within its bounds, decode what was framed,
// and hand on no more bytes than the peer sent.
func FuzzBlobProtocol(f *testing.F) {
	p := newBlobPeers(f)
	reqOK, _ := json.Marshal(BlobRequest{Digest: p.blobDig, Offset: 3})
	reqOther, _ := json.Marshal(BlobRequest{Digest: digest.FromString("other"), CompleteOnly: true, NoRedirect: true})
	okHead, _ := json.Marshal(BlobAnswer{Status: BlobOK, Size: int64(len(p.blob))})
	busy, _ := json.Marshal(BlobAnswer{Status: BlobBusy, Redirect: []string{p.holder.ID().String()}, Depth: 2})
	refused, _ := json.Marshal(BlobAnswer{Status: BlobRefused, Message: "not a member of this cluster"})
	f.Add(true, frame(reqOK))
	f.Add(true, frame(reqOther))
	f.Add(true, frame([]byte(`{"digest":"sha256:zz","offset":-1}`)))
	f.Add(true, frame([]byte(`{"digest":`)))
	f.Add(true, binary.BigEndian.AppendUint32(nil, 1<<20))
	f.Add(false, append(frame(okHead), p.blob...))
	f.Add(false, frame(busy))
	f.Add(false, frame(refused))
	f.Add(false, frame([]byte(`{"status":"ok","size":-1}`)))
	f.Add(false, binary.BigEndian.AppendUint32(nil, 1<<30))
	f.Fuzz(func(t *testing.T, asHolder bool, b []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if asHolder {
			p.holderSide(ctx, t, b)
		} else {
			p.fetcherSide(ctx, t, b)
		}
	})
}

func (p *blobPeers) holderSide(ctx context.Context, t *testing.T, b []byte) {
	p.mu.Lock()
	p.gotReq = nil
	p.mu.Unlock()
	s, err := p.fetcher.LibP2P().NewStream(ctx, p.holder.ID(), BlobProtocol)
	if err != nil {
		t.Fatalf("opening a blob stream: %v", err)
	}
	defer s.Close()
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = s.Write(b)
	_ = s.CloseWrite()
	start := time.Now()
	out, rerr := io.ReadAll(s)
	var nerr interface{ Timeout() bool }
	if errors.As(rerr, &nerr) && nerr.Timeout() {
		t.Fatalf("the holder held a stream for %s after a request of %d bytes", time.Since(start), len(b))
	}
	p.mu.Lock()
	got := p.gotReq
	p.mu.Unlock()
	var want BlobRequest
	framed := len(b) >= 4 && int(binary.BigEndian.Uint32(b)) <= maxBlobHeader && len(b)-4 >= int(binary.BigEndian.Uint32(b))
	decodes := framed && json.Unmarshal(b[4:4+binary.BigEndian.Uint32(b)], &want) == nil
	if !decodes {
		if got != nil {
			t.Fatalf("the holder served %+v for a request that does not decode: %.100q", *got, b)
		}
		return
	}
	if rerr != nil {
		t.Fatalf("a request that decodes (%+v) got a reset: %v", want, rerr)
	}
	if got == nil || *got != want {
		t.Fatalf("the holder's BlobServer got %+v for %+v", got, want)
	}
	head, err := readMessage(bytes.NewReader(out), maxBlobHeader)
	if err != nil {
		t.Fatalf("the holder's answer %.100q is not framed: %v", out, err)
	}
	var answer BlobAnswer
	if err := json.Unmarshal(head, &answer); err != nil {
		t.Fatalf("the holder's answer head %q does not decode: %v", head, err)
	}
	if rest := out[4+len(head):]; answer.Status == BlobOK && !bytes.Equal(rest, p.blob[want.Offset:]) {
		t.Fatalf("the holder sent %q from offset %d", rest, want.Offset)
	}
}

func (p *blobPeers) fetcherSide(ctx context.Context, t *testing.T, b []byte) {
	p.mu.Lock()
	p.lie = b
	p.mu.Unlock()
	start := time.Now()
	answer, body, err := p.fetcher.FetchBlob(ctx, p.liar.ID(), BlobRequest{Digest: p.blobDig}, 2*time.Second)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("FetchBlob took %s against %d lying bytes", d, len(b))
	}
	framed := len(b) >= 4 && int(binary.BigEndian.Uint32(b)) <= maxBlobHeader && len(b)-4 >= int(binary.BigEndian.Uint32(b))
	var want BlobAnswer
	decodes := framed && json.Unmarshal(b[4:4+binary.BigEndian.Uint32(b)], &want) == nil
	if err != nil {
		if decodes {
			t.Fatalf("FetchBlob refused an answer that decodes (%+v): %v", want, err)
		}
		return
	}
	if !decodes {
		t.Fatalf("FetchBlob accepted %+v from %.100q, which does not decode", answer, b)
	}
	if !equalAnswers(answer, want) {
		t.Fatalf("FetchBlob decoded %+v, want %+v", answer, want)
	}
	if answer.Status != BlobOK {
		if body != nil {
			t.Fatalf("FetchBlob returned a body with status %q", answer.Status)
		}
		return
	}
	got, _ := io.ReadAll(io.LimitReader(body, int64(len(b))+1))
	body.Close()
	if rest := b[4+binary.BigEndian.Uint32(b):]; !bytes.Equal(got, rest) {
		t.Fatalf("FetchBlob's body is %d bytes, the peer sent %d after the head", len(got), len(rest))
	}
}

func equalAnswers(a, b BlobAnswer) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// FuzzRaftAddress resolves arbitrary Raft server addresses (a joiner
// chooses its own): never a panic, and what resolves is a valid peer id,
// the one the address names.
func FuzzRaftAddress(f *testing.F) {
	h := newTestHost(f, func(c *Config) { c.Logger = tlog.Logger(f, slog.LevelError); c.ListenAddrs = c.ListenAddrs[:1] })
	l := NewRaftStreamLayer(h)
	f.Cleanup(func() { _ = l.Close() })
	id := h.ID().String()
	for _, s := range []string{id, "/ip4/127.0.0.1/tcp/4001/p2p/" + id, "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/" + id,
		"/dns4/node-1/tcp/4001/p2p/" + id, "/ip4/127.0.0.1/tcp/4001", "/p2p/" + id, "node-1", "", "/", "/ip4/999.0.0.1/tcp/1/p2p/" + id,
		"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "/ip6/::1/tcp/1/p2p/" + id + "/p2p-circuit/p2p/" + id} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, address string) {
		got, err := l.resolve(address)
		if err != nil {
			// The error quotes the address, and go-multiaddr's error
			// quotes it again, sometimes nested (\xf9 becomes \\xf9):
			// bounded by a multiple of the address, never more.
			if len(err.Error()) > 2000+16*len(address) {
				t.Fatalf("resolve(%.100q): error of %d bytes", address, len(err.Error()))
			}
			return
		}
		if err := got.Validate(); err != nil {
			t.Fatalf("resolve(%.100q) = %q, not a valid peer id: %v", address, got, err)
		}
		if !strings.HasPrefix(address, "/") {
			if want, _ := peer.Decode(address); want != got {
				t.Fatalf("resolve(%q) = %s", address, got)
			}
			return
		}
		m, _ := ma.NewMultiaddr(address)
		last := ""
		for _, c := range m {
			if c.Protocol().Code == ma.P_P2P {
				last = c.Value()
			}
		}
		if last != got.String() {
			t.Fatalf("resolve(%q) = %s, but the address names %q last", address, got, last)
		}
	})
}
