package api

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"
)

// clientKey is the context key of the client identity (see ClientFromContext).
type clientKey struct{}

// WithClient returns ctx carrying the identity of the client a request
// comes from.
func WithClient(ctx context.Context, client string) context.Context {
	return context.WithValue(ctx, clientKey{}, client)
}

// ClientFromContext returns who sent the request ctx belongs to: the
// client's IP address (later the authenticated user), or "" outside a
// request. Per-client limits, such as open upload sessions, count by it.
func ClientFromContext(ctx context.Context) string {
	s, _ := ctx.Value(clientKey{}).(string)
	return s
}

// remoteClient is the identity of r's client: the IP of its connection.
// A port is left out, so one host's many connections count as one client,
// and an IPv6 address counts by its /64, the block one host is usually
// given (it could otherwise take a new address for every request).
func remoteClient(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		return netip.PrefixFrom(addr, 64).Masked().String()
	}
	return addr.String()
}

// methodLabel bounds the method label of the HTTP metrics: a client
// chooses the method, so anything but the methods the registry knows is
// "other" (3,000 made-up methods must not become 3,000 series).
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// idleChunk is the most a response writes between two renewals of its
// write deadline: a client must take at least idleChunk bytes per
// ClientIdleTimeout (about 2 KiB/s with the default 60 s) to stay
// connected, however big the response.
const idleChunk = 128 << 10

// idleWriter cuts off a client that stops reading: the connection's write
// deadline is pushed forward before every piece of the response (at most
// idleChunk bytes), so a slow reader of a big blob goes on and a client
// that reads nothing is disconnected after idle. The handler's writes then
// fail, it returns, and the connection and the blob file are released.
type idleWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func newIdleWriter(w http.ResponseWriter, idle time.Duration) *idleWriter {
	iw := &idleWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: idle}
	iw.renew()
	return iw
}

func (w *idleWriter) renew() {
	// Fails only on a connection that does not support deadlines (an
	// httptest.ResponseRecorder): there is nothing to cut off then.
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.idle))
}

// bodyDeadline bounds the reads of the request body from now on.
func (w *idleWriter) bodyDeadline(idle time.Duration) {
	_ = w.rc.SetReadDeadline(time.Now().Add(idle))
}

func (w *idleWriter) WriteHeader(status int) {
	w.renew()
	w.ResponseWriter.WriteHeader(status)
}

func (w *idleWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		piece := p[:min(len(p), idleChunk)]
		w.renew()
		m, err := w.ResponseWriter.Write(piece)
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// ReadFrom copies r to the response, renewing the deadline as bytes go.
// A file (or a *io.LimitedReader over one, as http.ServeContent makes) is
// sent in pieces of idleChunk, each still a *io.LimitedReader over the
// *os.File, so the connection sends it with sendfile. Anything else (bytes
// arriving from a peer) goes through Write, so the deadline is renewed
// when bytes arrive, not when a piece was asked for: a slow source does not
// count against the client.
func (w *idleWriter) ReadFrom(r io.Reader) (int64, error) {
	src, remaining := r, int64(-1) // -1: until EOF
	lr, limited := r.(*io.LimitedReader)
	if limited {
		src, remaining = lr.R, lr.N
	}
	if f, ok := src.(FileReader); ok && f.OSFile() != nil {
		src = f.OSFile() // a wrapper of a file (a read the node tracks)
	}
	if _, ok := src.(*os.File); !ok {
		return io.Copy(writerOnly{w}, r)
	}
	if limited {
		defer func() { lr.N = remaining }()
	}
	var total int64
	for remaining != 0 {
		want := int64(idleChunk)
		if remaining > 0 {
			want = min(want, remaining)
		}
		w.renew()
		n, err := io.Copy(w.ResponseWriter, &io.LimitedReader{R: src, N: want})
		total += n
		if remaining > 0 {
			remaining -= n
		}
		if err != nil {
			return total, err
		}
		if n < want {
			break // src ended
		}
	}
	return total, nil
}

// FileReader is a blob's content that wraps an *os.File (the node tracks
// the read until Close): the server sends the file with sendfile, as it
// does an *os.File. Reads and seeks of the wrapper must be the file's.
type FileReader interface {
	OSFile() *os.File
}

// writerOnly hides every method but Write, so io.Copy uses Write.
type writerOnly struct{ io.Writer }

func (w *idleWriter) FlushError() error {
	w.renew()
	return w.rc.Flush()
}

func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Limits of the HTTP server on the reading side (see NewServer).
const (
	// MaxHeaderBytes bounds a request's header, request line included.
	MaxHeaderBytes = 1 << 20
	// KeepAliveTimeout closes a keep-alive connection with no request.
	KeepAliveTimeout = 2 * time.Minute
	// maxHeaderWait bounds how long a request's header may take to arrive.
	maxHeaderWait = 30 * time.Second
)

// NewServer returns the HTTP server of a node serving h: the request
// header must arrive within min(ClientIdleTimeout, 30 s) and fit in
// MaxHeaderBytes, and an idle keep-alive connection is closed after
// KeepAliveTimeout. There is no
// whole-request timeout: request bodies are cut when they stall for
// BodyIdleTimeout and responses when the client stops reading for
// ClientIdleTimeout (see Handler), so big blobs on slow links work.
func NewServer(cfg Config, h http.Handler, errLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(cfg.ClientIdleTimeout, maxHeaderWait),
		IdleTimeout:       KeepAliveTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          errLog,
	}
}
