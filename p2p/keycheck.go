package p2p

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	ipnet "github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/transport"
	"github.com/libp2p/go-libp2p/p2p/net/pnet"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/libp2p/go-libp2p/p2p/transport/tcpreuse"
	manet "github.com/multiformats/go-multiaddr/net"
)

// A private network (libp2p pnet, --cluster-key) encrypts every byte with
// the pre-shared key before anything else, so a peer with no key or another
// key is not told so: the two sides just read garbage and hang up, and
// libp2p reports "failed to negotiate security protocol: … connection reset"
// or "incoming message was too large". This file puts words on it.
//
// Dialing side (explainConnectError): a security negotiation that fails
// right after the TCP connection was made, with none of the errors of a
// real handshake (a peer id mismatch, a TLS or Noise failure), is
// probably a key mismatch; the error says so and names --cluster-key.
//
// Keyed side (keyCheckConn): the first bytes a peer sends are, with the
// key, a 24-byte nonce and then, encrypted, libp2p's multistream header.
// Without a key they are that header in plain text; with another key they
// do not decrypt to it. Either way the node logs a WARN, at most one per
// remote IP and kind a minute (keyWarnEvery). A node without a key does
// the same the other way round: a peer whose first bytes are not the
// plain multistream header probably has a key (or is not libp2p).

// multistreamHeader is what every libp2p connection starts with, before
// the security protocol is chosen (multistream-select 1.0.0, length
// prefixed).
var multistreamHeader = []byte("\x13/multistream/1.0.0\n")

// pnetNonceLen is the length of the nonce a pnet connection starts with.
const pnetNonceLen = 24

// keyWarnEvery bounds the key-mismatch WARNs: one per remote IP and kind
// in this period. keyWarnMaxRemotes bounds the remotes remembered.
const (
	keyWarnEvery      = time.Minute
	keyWarnMaxRemotes = 4096
)

// notKeyErrors are errors of a security handshake that did start (so the
// keys matched): a key mismatch never gets that far.
var notKeyErrors = []string{"peer id mismatch", "remote key matches", "tls:", "noise:"}

// explainConnectError words a failed dial that was probably refused for
// its private-network key; other errors are returned as they are.
func explainConnectError(private bool, err error) error {
	s := err.Error()
	if !strings.Contains(s, "failed to negotiate security protocol") {
		return err
	}
	for _, n := range notKeyErrors {
		if strings.Contains(s, n) {
			return err
		}
	}
	if private {
		return fmt.Errorf("the peer broke off the handshake: probably its cluster key does not match this node's --cluster-key (or it has none); every node needs the same key file: %w", err)
	}
	return fmt.Errorf("the peer broke off the handshake: probably it runs a private cluster and this node has no cluster key: pass the cluster's key file with --cluster-key: %w", err)
}

// keyCheckTCP returns a TCP transport constructor for libp2p.Transport
// whose listeners let check see the first bytes of every inbound
// connection (see keyCheckConn), with SO_REUSEPORT off (see listen.go).
func keyCheckTCP(check *keyChecker) any {
	return func(up transport.Upgrader, rcmgr network.ResourceManager, shared *tcpreuse.ConnMgr) (*tcp.TcpTransport, error) {
		return tcp.NewTCPTransport(&keyCheckUpgrader{Upgrader: up, check: check}, rcmgr, shared, tcp.DisableReuseport())
	}
}

// keyCheckUpgrader wraps the listeners the TCP transport hands it.
type keyCheckUpgrader struct {
	transport.Upgrader
	check *keyChecker
}

func (u *keyCheckUpgrader) GateMaListener(l manet.Listener) transport.GatedMaListener {
	return u.Upgrader.GateMaListener(&keyCheckListener{Listener: l, check: u.check})
}

type keyCheckListener struct {
	manet.Listener
	check *keyChecker
}

func (l *keyCheckListener) Accept() (manet.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &keyCheckConn{Conn: c, check: l.check}, nil
}

// keyCheckConn records the first bytes read from the peer (by libp2p's
// upgrader, which reads the pnet nonce and then the multistream header)
// and has them judged once there are enough.
type keyCheckConn struct {
	manet.Conn
	check *keyChecker
	// done is set once the first bytes were judged: later reads (the data
	// path) only load it.
	done atomic.Bool
	mu   sync.Mutex
	head []byte
}

// A peer whose key does not match is cut off at once: left to libp2p, the
// garbage it decrypts can read as the length of a message that never
// comes, and both sides then wait for the handshake timeout, so the
// dialing side would not learn that its key was the problem.
func (c *keyCheckConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n == 0 || c.done.Load() {
		return n, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	need := pnetNonceLen + len(multistreamHeader)
	c.head = append(c.head, b[:min(n, need-len(c.head))]...)
	switch v := c.check.judge(c.head); v {
	case verdictUnknown:
		return n, err
	case verdictOK:
		c.done.Store(true)
		return n, err
	default:
		c.done.Store(true)
		c.check.report(v, c.RemoteAddr())
		_ = c.Conn.Close()
		return 0, errKeyMismatch
	}
}

// errKeyMismatch ends the handshake of a peer whose key does not match.
var errKeyMismatch = errors.New("p2p: the peer's private network key does not match (see the WARN above)")

// SetKeepAlive, SetKeepAlivePeriod and SetLinger reach the TCP socket, as
// libp2p's TCP transport expects of the connections it accepts.
func (c *keyCheckConn) SetKeepAlive(on bool) error {
	if k, ok := c.Conn.(interface{ SetKeepAlive(bool) error }); ok {
		return k.SetKeepAlive(on)
	}
	return nil
}

func (c *keyCheckConn) SetKeepAlivePeriod(d time.Duration) error {
	if k, ok := c.Conn.(interface{ SetKeepAlivePeriod(time.Duration) error }); ok {
		return k.SetKeepAlivePeriod(d)
	}
	return nil
}

func (c *keyCheckConn) SetLinger(sec int) error {
	if k, ok := c.Conn.(interface{ SetLinger(int) error }); ok {
		return k.SetLinger(sec)
	}
	return nil
}

type verdict int

const (
	verdictUnknown  verdict = iota // not enough bytes yet
	verdictOK                      // the key matches
	verdictNoKey                   // plain multistream: the peer has no key
	verdictOtherKey                // does not decrypt: another key (or not libp2p)
	verdictHasKey                  // to a node without a key: not plain multistream
	verdictHTTP                    // an HTTP request: a --join URL with the p2p port?
)

// keyChecker judges the first bytes of inbound connections against the
// private-network key psk (nil: this node has none) and logs mismatches,
// rate-limited.
type keyChecker struct {
	psk ipnet.PSK
	log *slog.Logger
	now func() time.Time

	mu   sync.Mutex
	last map[string]time.Time // remote IP and verdict → last WARN
}

func newKeyChecker(psk ipnet.PSK, log *slog.Logger) *keyChecker {
	return &keyChecker{psk: psk, log: log, now: time.Now, last: map[string]time.Time{}}
}

// judge classifies the first bytes a peer sent, as soon as they allow
// it: libp2p may read them a byte at a time and give up on garbage after
// a few, so every byte is compared with the multistream header as it
// comes (decrypted with the key, after the nonce, on a private network).
func (k *keyChecker) judge(head []byte) verdict {
	if len(head) > 0 && head[0] >= 'A' && head[0] <= 'Z' { // text, not libp2p
		if len(head) < len("DELETE ") {
			return verdictUnknown
		}
		for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "PATCH ", "DELETE ", "OPTIONS "} {
			if bytes.HasPrefix(head, []byte(m)) {
				return verdictHTTP
			}
		}
	}
	if k.psk == nil {
		return prefixVerdict(head, verdictHasKey)
	}
	if v := prefixVerdict(head, verdictUnknown); v == verdictOK && len(head) >= len(multistreamHeader) {
		return verdictNoKey // the whole header in plain text
	}
	if len(head) <= pnetNonceLen {
		return verdictUnknown
	}
	// Decrypt what follows the nonce with the key, as libp2p's pnet
	// connection does.
	pc, err := pnet.NewProtectedConn(k.psk, &replayConn{r: bytes.NewReader(head)})
	if err != nil {
		return verdictUnknown
	}
	plain := make([]byte, len(head)-pnetNonceLen)
	if _, err := io.ReadFull(pc, plain); err != nil {
		return verdictUnknown
	}
	return prefixVerdict(plain, verdictOtherKey)
}

// prefixVerdict compares b with the start of the multistream header: the
// whole header is verdictOK, a differing byte is mismatch, a matching
// prefix is verdictUnknown.
func prefixVerdict(b []byte, mismatch verdict) verdict {
	n := min(len(b), len(multistreamHeader))
	if !bytes.Equal(b[:n], multistreamHeader[:n]) {
		return mismatch
	}
	if n == len(multistreamHeader) {
		return verdictOK
	}
	return verdictUnknown
}

// report logs a mismatch, once per remote IP and kind per keyWarnEvery.
func (k *keyChecker) report(v verdict, remote net.Addr) {
	if v == verdictUnknown || v == verdictOK {
		return
	}
	ip := remote.String()
	if host, _, err := net.SplitHostPort(ip); err == nil {
		ip = host
	}
	now := k.now()
	key := fmt.Sprint(ip, "/", v)
	k.mu.Lock()
	if t, ok := k.last[key]; ok && now.Sub(t) < keyWarnEvery {
		k.mu.Unlock()
		return
	}
	if len(k.last) >= keyWarnMaxRemotes {
		for r, t := range k.last {
			if now.Sub(t) >= keyWarnEvery {
				delete(k.last, r)
			}
		}
	}
	if len(k.last) < keyWarnMaxRemotes {
		k.last[key] = now
	}
	k.mu.Unlock()
	if v == verdictHTTP {
		k.log.Warn("p2p: an HTTP client connected to the p2p port and was refused: if it is a meshreg --join, point it at a node's API URL (http://HOST:5000) or at a multiaddr with /p2p/<id>",
			"remote", remote.String(), "next_report_after", keyWarnEvery)
		return
	}
	if v == verdictHasKey {
		k.log.Warn("p2p: a peer with a cluster key tried to connect and was refused: its first bytes are not plain libp2p, so it probably runs with a --cluster-key, which this node has not (or it is not libp2p at all)",
			"remote", remote.String(), "next_report_after", keyWarnEvery)
		return
	}
	if v == verdictNoKey {
		k.log.Warn("p2p: a peer without the cluster key tried to connect and was refused: it speaks plain libp2p, so it probably has no --cluster-key; give it the cluster's key file if it should join",
			"remote", remote.String(), "next_report_after", keyWarnEvery)
		return
	}
	k.log.Warn("p2p: a peer with another cluster key tried to connect and was refused: its first bytes do not decrypt with this node's key, so it probably has a different --cluster-key (or is not libp2p at all)",
		"remote", remote.String(), "next_report_after", keyWarnEvery)
}

// replayConn is a net.Conn that reads recorded bytes; only Read is used
// (by pnet's decryption in keyChecker.judge).
type replayConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

var errReplayOnly = errors.New("p2p: replayConn only reads")

func (c *replayConn) Write([]byte) (int, error) { return 0, errReplayOnly }
