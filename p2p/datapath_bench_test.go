// This file benchmarks candidate data paths for blob transfer between two
// peers on loopback, so the blob-fetch data path can be chosen by numbers
// rather than by taste. Every sub-benchmark moves the same 256 MiB payload
// from a sender to a receiver that reads it fully and sha256-verifies it, as
// a real fetch verifying a digest does. The data paths are:
//
//   - libp2p host pairs over TCP with Noise or TLS security and yamux with
//     the default 16 MiB stream window or a 64 MiB one (the host uses TLS
//     first, then Noise, and the default window);
//   - HTTPS on a plain TLS listener, both ends authenticated by their libp2p
//     keys via the libp2p TLS certificate scheme (libp2ptls.Identity);
//   - plain HTTP and a raw TCP copy, as upper bounds;
//   - "+disk" variants of the best libp2p option (TLS, default window: the
//     least CPU per byte. The 64 MiB window moved a bare stream up to twice
//     as fast in some runs, but not a peer pull through a node, whose disk
//     writes and hashing set the pace: README, Benchmark) and
//     of HTTPS, where the receiver also writes the blob to a file and
//     fsyncs it, to see whether the disk is the bottleneck anyway.
//
// Besides MB/s each result reports cpu-s/GB: CPU seconds (user+system, both
// peers, since they share this process) spent per GB moved.
//
// Run: go test ./p2p -run '^$' -bench BenchmarkDataPath -benchtime 3x
package p2p_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

const (
	benchPayloadSize = 256 << 20
	benchChunkSize   = 1 << 20
	benchBlobProto   = "/meshreg/bench/blob/1.0.0"
)

// benchChunk is 1 MiB of deterministic pseudo-random bytes; the payload is
// this chunk repeated, so neither side ever holds 256 MiB and the sender
// spends no CPU generating data.
var benchChunk = func() []byte {
	buf := make([]byte, benchChunkSize)
	if _, err := rand.NewChaCha8([32]byte{'m', 'e', 's', 'h', 'r', 'e', 'g'}).Read(buf); err != nil {
		panic(err)
	}
	return buf
}()

// benchDigest is the sha256 of the whole payload, computed once.
var benchDigest = sync.OnceValue(func() []byte {
	h := sha256.New()
	if _, err := writePayload(h); err != nil {
		panic(err)
	}
	return h.Sum(nil)
})

// writePayload writes the 256 MiB payload to w in 1 MiB writes.
func writePayload(w io.Writer) (int64, error) {
	var n int64
	for n < benchPayloadSize {
		m, err := w.Write(benchChunk)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// blobOpener starts one transfer (a new stream, request or connection) and
// returns the receiving end of the payload.
type blobOpener func(ctx context.Context) (io.ReadCloser, error)

func BenchmarkDataPath(b *testing.B) {
	benchDigest() // keep the one-off digest computation out of every timing

	noiseSec := libp2p.Security(noise.ID, noise.New)
	tlsSec := libp2p.Security(libp2ptls.ID, libp2ptls.New)
	bigWindow := yamuxWithWindow(64 << 20)

	paths := []struct {
		name   string
		toDisk bool
		setup  func(b *testing.B) blobOpener
	}{
		{"libp2p-noise-yamux16M", false, func(b *testing.B) blobOpener { return libp2pPath(b, noiseSec, yamux.DefaultTransport) }},
		{"libp2p-tls-yamux16M", false, func(b *testing.B) blobOpener { return libp2pPath(b, tlsSec, yamux.DefaultTransport) }},
		{"libp2p-noise-yamux64M", false, func(b *testing.B) blobOpener { return libp2pPath(b, noiseSec, bigWindow) }},
		{"libp2p-tls-yamux64M", false, func(b *testing.B) blobOpener { return libp2pPath(b, tlsSec, bigWindow) }},
		{"https-peerid", false, httpsPath},
		{"http", false, httpPath},
		{"tcp", false, tcpPath},
		{"libp2p-tls-yamux16M+disk", true, func(b *testing.B) blobOpener { return libp2pPath(b, tlsSec, yamux.DefaultTransport) }},
		{"https-peerid+disk", true, httpsPath},
	}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			benchFetch(b, p.setup(b), p.toDisk)
		})
	}
}

// benchFetch runs the timed loop: each iteration opens a new transfer, reads
// it fully while hashing (and, if toDisk, writing a file that is fsynced),
// and checks the digest.
func benchFetch(b *testing.B, open blobOpener, toDisk bool) {
	ctx := b.Context()
	buf := make([]byte, benchChunkSize)
	h := sha256.New()
	dir := ""
	if toDisk {
		dir = b.TempDir()
	}
	b.SetBytes(benchPayloadSize)
	cpu0 := cpuTime(b)
	for b.Loop() {
		if err := fetchOnce(ctx, open, h, buf, dir); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime(b) - cpu0
	gb := float64(b.N) * benchPayloadSize / 1e9
	b.ReportMetric(cpu.Seconds()/gb, "cpu-s/GB")
}

func fetchOnce(ctx context.Context, open blobOpener, h hash.Hash, buf []byte, dir string) error {
	rc, err := open(ctx)
	if err != nil {
		return fmt.Errorf("open transfer: %w", err)
	}
	defer rc.Close()
	h.Reset()
	dst := io.Writer(h)
	var f *os.File
	if dir != "" {
		if f, err = os.CreateTemp(dir, "blob-*"); err != nil {
			return err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		dst = io.MultiWriter(h, f)
	}
	n, err := io.CopyBuffer(dst, rc, buf)
	if err != nil {
		return fmt.Errorf("read payload after %d bytes: %w", n, err)
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if n != benchPayloadSize || !bytes.Equal(h.Sum(nil), benchDigest()) {
		return fmt.Errorf("payload mismatch: got %d bytes, digest %x", n, h.Sum(nil))
	}
	return nil
}

// cpuTime returns the user+system CPU time consumed by this process so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// yamuxWithWindow returns a copy of yamux.DefaultTransport whose per-stream
// receive window may grow to window bytes (the default maximum is 16 MiB).
// yamux.Transport is a defined type over go-yamux's Config, so copying the
// config and converting back keeps every other default.
func yamuxWithWindow(window uint32) *yamux.Transport {
	cfg := *yamux.DefaultTransport.Config()
	cfg.MaxStreamWindowSize = window
	return (*yamux.Transport)(&cfg)
}

// libp2pPath connects two libp2p hosts over TCP with the given security and
// yamux transport. The server host answers every blob stream with the
// payload; each transfer is a new stream on the same connection.
func libp2pPath(b *testing.B, security libp2p.Option, mux *yamux.Transport) blobOpener {
	newHost := func() host.Host {
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			b.Fatal(err)
		}
		h, err := libp2p.New(
			libp2p.Identity(key),
			libp2p.Transport(tcp.NewTCPTransport),
			security,
			libp2p.Muxer(yamux.ID, mux),
			libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
			libp2p.DisableRelay(),
			libp2p.DisableMetrics(),
			libp2p.ResourceManager(&network.NullResourceManager{}),
		)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { h.Close() })
		return h
	}
	server, client := newHost(), newHost()
	server.SetStreamHandler(benchBlobProto, func(s network.Stream) {
		if _, err := writePayload(s); err != nil {
			s.Reset()
			return
		}
		s.Close()
	})
	if err := client.Connect(b.Context(), peer.AddrInfo{ID: server.ID(), Addrs: server.Addrs()}); err != nil {
		b.Fatal(err)
	}
	return func(ctx context.Context) (io.ReadCloser, error) {
		return client.NewStream(ctx, server.ID(), benchBlobProto)
	}
}

// blobHandler serves the payload with a Content-Length.
func blobHandler(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Length", strconv.Itoa(benchPayloadSize))
	writePayload(w) //nolint:errcheck // a short body fails the client's digest check
}

// serveHTTP serves handler on ln until the benchmark ends.
func serveHTTP(b *testing.B, ln net.Listener, handler http.Handler) {
	srv := &http.Server{Handler: handler}
	go srv.Serve(ln) //nolint:errcheck // returns ErrServerClosed on Close
	b.Cleanup(func() { srv.Close() })
}

// getBlob returns an opener that GETs url with client.
func getBlob(client *http.Client, url string) blobOpener {
	return func(ctx context.Context) (io.ReadCloser, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return resp.Body, nil
	}
}

// httpsPath serves GET /blob over TLS where both ends present libp2p TLS
// certificates (libp2ptls.NewIdentity): the client pins the server's peer
// ID, and the server derives the client's peer ID from its certificate and
// only serves the peer it expects.
//
// Identity.ConfigForPeer returns a single-use *tls.Config (its verify
// callback sends on and closes a per-config channel), so each TLS handshake
// needs a fresh one: GetConfigForClient on the server, DialTLSContext on
// the client. Its ALPN is "libp2p", which is replaced by "http/1.1".
func httpsPath(b *testing.B) blobOpener {
	newIdentity := func() (peer.ID, *libp2ptls.Identity) {
		key, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			b.Fatal(err)
		}
		id, err := peer.IDFromPrivateKey(key)
		if err != nil {
			b.Fatal(err)
		}
		ident, err := libp2ptls.NewIdentity(key)
		if err != nil {
			b.Fatal(err)
		}
		return id, ident
	}
	serverID, serverIdent := newIdentity()
	clientID, clientIdent := newIdentity()

	serverConf := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		conf, _ := serverIdent.ConfigForPeer("") // any peer; the handler authorizes
		conf.NextProtos = []string{"http/1.1"}
		return conf, nil
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	serveHTTP(b, tls.NewListener(ln, serverConf), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pub, err := libp2ptls.PubKeyFromCertChain(r.TLS.PeerCertificates)
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if remote, err := peer.IDFromPublicKey(pub); err != nil || remote != clientID {
			http.Error(w, "unexpected peer", http.StatusForbidden)
			return
		}
		blobHandler(w, r)
	}))

	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			conf, _ := clientIdent.ConfigForPeer(serverID) // fails the handshake unless the server is serverID
			conf.NextProtos = []string{"http/1.1"}
			conn := tls.Client(raw, conf)
			if err := conn.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return conn, nil
		},
		ReadBufferSize: benchChunkSize,
	}}
	b.Cleanup(client.CloseIdleConnections)
	return getBlob(client, "https://"+ln.Addr().String()+"/blob")
}

// httpPath serves GET /blob over plain HTTP: the cost of HTTP without any
// security.
func httpPath(b *testing.B) blobOpener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	serveHTTP(b, ln, http.HandlerFunc(blobHandler))
	client := &http.Client{Transport: &http.Transport{ReadBufferSize: benchChunkSize}}
	b.Cleanup(client.CloseIdleConnections)
	return getBlob(client, "http://"+ln.Addr().String()+"/blob")
}

// tcpPath writes the payload on each accepted TCP connection and closes it:
// the loopback upper bound. Each transfer is a new connection.
func tcpPath(b *testing.B) blobOpener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			go func() {
				defer conn.Close()
				writePayload(conn) //nolint:errcheck // a short payload fails the client's digest check
			}()
		}
	}()
	dialer := &net.Dialer{}
	return func(ctx context.Context) (io.ReadCloser, error) {
		return dialer.DialContext(ctx, "tcp", ln.Addr().String())
	}
}
