// Package p2p runs a node's libp2p host and carries Raft over libp2p streams.
//
// One host per node gives the node one identity (its peer id, whose key lives
// in the data directory) and one set of ports; every connection is encrypted
// (Noise or TLS) and multiplexed with yamux. Other packages reach the host
// through [Host.LibP2P]; consensus gets a [RaftStreamLayer] and never imports
// this package.
package p2p

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/pnet"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	basicconnmgr "github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	libp2pquic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	ma "github.com/multiformats/go-multiaddr"
)

// Default listen addresses: TCP and QUIC on port 4001, all IPv4 interfaces.
const (
	DefaultTCPListenAddr  = "/ip4/0.0.0.0/tcp/4001"
	DefaultQUICListenAddr = "/ip4/0.0.0.0/udp/4001/quic-v1"
)

// identityFile is where the host key lives, relative to Config.DataDir.
//
//	<DataDir>/
//	└── p2p/               (0700)
//	    └── identity.key   (0600, libp2p protobuf-encoded Ed25519 private key)
var identityFile = filepath.Join("p2p", "identity.key")

// MaxInboundStreamsPerPeer bounds the concurrent inbound streams one peer
// may hold open for one protocol (Raft excepted, see newResourceManager).
const MaxInboundStreamsPerPeer = 64

// pskLen is the length of a libp2p private network key (a 256-bit secret).
const pskLen = 32

// Config configures a Host. Fill it from DefaultConfig and call Validate.
type Config struct {
	// DataDir holds the identity key (see identityFile). Required.
	DataDir string
	// ListenAddrs are multiaddrs to listen on, TCP and/or QUIC (quic-v1).
	// With a private network key only the TCP ones are used: libp2p cannot
	// run QUIC on a private network.
	ListenAddrs []string
	// PrivateNetworkKey is a 32-byte libp2p pnet key (see
	// LoadPrivateNetworkKey). Peers without the same key cannot connect.
	// nil means a public network.
	PrivateNetworkKey []byte
	// Logger receives the host's own log lines (not libp2p's internals).
	// nil means slog.Default().
	Logger *slog.Logger
	// LowWater and HighWater are the connection manager's watermarks: once
	// more than HighWater connections are open it trims back to LowWater,
	// sparing protected peers (Raft peers are protected by RaftStreamLayer).
	LowWater, HighWater int
	// Gater, if set, vets every dial and accepted connection. Tests and the
	// testnet harness pass a *PartitionGater to cut nodes apart.
	Gater connmgr.ConnectionGater
	// Advertise is the address other nodes reach this one at (the Raft
	// address, also added to what identify and the DHT give out, from
	// which bridge addresses are left out): an IP (then the TCP listen
	// port is used) or a multiaddr without /p2p/. Empty: chosen among the
	// listen addresses (see advertise.go).
	Advertise string
	// UserAgent is what identify tells other peers this host runs (the
	// release and the Raft commands it applies, see node/features.go);
	// empty: libp2p's default.
	UserAgent string
	// RouteTargets are hosts (names or IPs) of other nodes, from --join:
	// without Advertise, the address the route to them leaves from is
	// preferred.
	RouteTargets []string

	// interfaces and route replace the system's interface list and
	// routing table in tests; nil means the system's.
	interfaces func() ([]NetInterface, error)
	route      func(ipv6 bool) RouteFunc
}

// DefaultConfig returns a Config listening on TCP and QUIC port 4001 with
// watermarks suited to a registry cluster (a few dozen peers, not a swarm).
// DataDir must still be set.
func DefaultConfig() Config {
	return Config{
		ListenAddrs: []string{DefaultTCPListenAddr, DefaultQUICListenAddr},
		LowWater:    64,
		HighWater:   128,
	}
}

// Validate reports the first problem with c.
func (c Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("p2p: DataDir is required")
	}
	if len(c.ListenAddrs) == 0 {
		return errors.New("p2p: at least one listen address is required")
	}
	for _, s := range c.ListenAddrs {
		if _, err := ma.NewMultiaddr(s); err != nil {
			return fmt.Errorf("p2p: listen address %q: %w", s, err)
		}
	}
	if c.PrivateNetworkKey != nil && len(c.PrivateNetworkKey) != pskLen {
		return fmt.Errorf("p2p: private network key is %d bytes, want %d", len(c.PrivateNetworkKey), pskLen)
	}
	if c.PrivateNetworkKey != nil && len(tcpOnly(c.ListenAddrs)) == 0 {
		return errors.New("p2p: a private network needs a TCP listen address (QUIC cannot be used with a private network key)")
	}
	if c.Advertise != "" {
		_, m, err := parseAdvertise(c.Advertise)
		if err != nil {
			return err
		}
		if m != nil && c.PrivateNetworkKey != nil && len(tcpOnly([]string{m.String()})) == 0 {
			return fmt.Errorf("p2p: --advertise %s is a QUIC address, which a private network (--cluster-key) cannot use: advertise a TCP one", c.Advertise)
		}
	}
	if c.LowWater < 0 || c.HighWater <= 0 || c.LowWater > c.HighWater {
		return fmt.Errorf("p2p: connection watermarks low=%d high=%d: want 0 <= low <= high, high > 0", c.LowWater, c.HighWater)
	}
	return nil
}

// Host is a node's libp2p host. Its methods are safe for concurrent use.
type Host struct {
	h     host.Host
	gater connmgr.ConnectionGater
	log   *slog.Logger
	// authz judges inbound streams (see SetAuthorizer); refused counts
	// the streams it turned away.
	authz   atomic.Pointer[Authorizer]
	refused atomic.Int64
	// private is set on a private network (a cluster key).
	private bool
	// adv is the address other nodes reach this one at (advertise.go).
	adv atomic.Pointer[advertised]
}

// NewHost loads (or, on first start, creates) the identity key in
// cfg.DataDir and starts a libp2p host listening on cfg.ListenAddrs.
//
// Transports are chosen explicitly (libp2p's defaults would add WebSocket,
// WebTransport and WebRTC): TCP and QUIC, Noise and TLS security, yamux.
// With a private network key only TCP is used; QUIC listen addresses are
// dropped with a log line, because libp2p refuses QUIC on a private network.
// Relay is disabled and metrics are not registered (several hosts may share
// one process in tests; node can wire Prometheus separately).
func NewHost(cfg Config) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	key, created, err := loadOrCreateIdentity(filepath.Join(cfg.DataDir, identityFile))
	if err != nil {
		return nil, err
	}
	cm, err := basicconnmgr.NewConnManager(cfg.LowWater, cfg.HighWater)
	if err != nil {
		return nil, fmt.Errorf("p2p: connection manager: %w", err)
	}
	rm, err := newResourceManager()
	if err != nil {
		_ = cm.Close()
		return nil, fmt.Errorf("p2p: resource manager: %w", err)
	}

	listen := cfg.ListenAddrs
	opts := []libp2p.Option{
		libp2p.Identity(key),
		// TLS first: it moved blob bytes 10-25% faster than Noise with less
		// CPU on these machines (AES-GCM in hardware; see the data path
		// benchmark in datapath_bench_test.go). Noise stays for peers that
		// prefer it.
		libp2p.Security(libp2ptls.ID, libp2ptls.New),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ConnectionManager(cm),
		libp2p.ResourceManager(rm),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
	}
	if cfg.PrivateNetworkKey != nil {
		// keycheck.go: inbound peers with no key or another one are logged.
		opts = append(opts, libp2p.Transport(keyCheckTCP(newKeyChecker(cfg.PrivateNetworkKey, log))))
		listen = tcpOnly(cfg.ListenAddrs)
		if len(listen) < len(cfg.ListenAddrs) {
			log.Warn("p2p: private network: QUIC cannot be used with a private network key, listening on TCP only",
				"dropped", len(cfg.ListenAddrs)-len(listen))
		}
		opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(cfg.PrivateNetworkKey)))
	} else {
		opts = append(opts, libp2p.Transport(keyCheckTCP(newKeyChecker(nil, log))), libp2p.Transport(libp2pquic.NewTransport))
	}
	if err := checkPortsFree(listen); err != nil {
		_ = rm.Close()
		_ = cm.Close()
		return nil, err
	}
	hst := &Host{gater: cfg.Gater, log: log, private: cfg.PrivateNetworkKey != nil}
	opts = append(opts, libp2p.ListenAddrStrings(listen...), libp2p.AddrsFactory(advertisedAddrs(&hst.adv)))
	if cfg.UserAgent != "" {
		opts = append(opts, libp2p.UserAgent(cfg.UserAgent))
	}
	if cfg.Gater != nil {
		opts = append(opts, libp2p.ConnectionGater(cfg.Gater))
	}

	h, err := libp2p.New(opts...)
	if err != nil {
		// libp2p.New does not promise to close the managers it was given
		// when it fails; closing them twice is harmless.
		_ = rm.Close()
		_ = cm.Close()
		return nil, fmt.Errorf("p2p: start host: %w", err)
	}
	if err := checkAllListening(h, listen); err != nil {
		_ = h.Close()
		return nil, err
	}
	adv, err := chooseRaftAddr(cfg, h.Network().ListenAddresses())
	if err != nil {
		_ = h.Close()
		return nil, err
	}
	hst.h = h
	hst.adv.Store(&adv)
	log.Info("p2p: advertising this address to other nodes (the Raft address)", "addr", adv.addr.String(),
		"interface", adv.iface, "reason", adv.reason)
	log.Info("p2p: host started", "peer", h.ID().String(), "new_identity", created,
		"private_network", cfg.PrivateNetworkKey != nil, "addrs", fmt.Sprint(hst.Addrs()))
	return hst, nil
}

// newResourceManager builds libp2p's resource manager with its default
// limits scaled to the machine (AutoScale: 1/8 of total memory, half the
// file descriptors), plus the limits of libp2p's own services (identify,
// ping) and an explicit allowance for Raft.
//
// Why these: a registry node talks to a handful of cluster peers, not a
// public swarm, so the defaults are generous for peer/connection counts,
// while the memory cap (an eighth of RAM) keeps libp2p's stream buffers from
// competing with badger and blob I/O. Raft is the one protocol that must
// never be starved, so it gets its own protocol limits rather than sharing
// the default protocol bucket with future protocols: up to 64 streams per
// peer (NetworkTransport pools a few connections per peer plus a pipeline)
// and 64 MiB per peer (yamux windows of snapshot streams).
//
// Every other protocol (the control protocols, blobs, the DHT) shares
// libp2p's default protocol bucket, with a fixed bound per peer and
// protocol of MaxInboundStreamsPerPeer concurrent inbound streams (libp2p
// would scale it with the machine's memory): one peer, member or not,
// cannot hold more than that many streams of one protocol open here.
// Peers that are not members are refused before a byte is read anyway
// (Host.SetAuthorizer); the bound is for members that misbehave.
func newResourceManager() (network.ResourceManager, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	limits.ProtocolPeerBaseLimit.StreamsInbound = MaxInboundStreamsPerPeer
	limits.ProtocolPeerLimitIncrease.StreamsInbound = 0
	limits.AddProtocolLimit(RaftProtocol,
		rcmgr.BaseLimit{StreamsInbound: 1024, StreamsOutbound: 1024, Streams: 2048, Memory: 256 << 20},
		rcmgr.BaseLimitIncrease{})
	limits.AddProtocolPeerLimit(RaftProtocol,
		rcmgr.BaseLimit{StreamsInbound: 64, StreamsOutbound: 64, Streams: 128, Memory: 64 << 20},
		rcmgr.BaseLimitIncrease{})
	return rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.AutoScale()))
}

// ID is this host's peer id (also its Raft server id).
func (h *Host) ID() peer.ID { return h.h.ID() }

// AgentVersion is what identify last learned peer p runs (its
// UserAgent), "" when this host never identified p.
func (h *Host) AgentVersion(p peer.ID) string {
	v, err := h.h.Peerstore().Get(p, "AgentVersion")
	if err != nil {
		return ""
	}
	s, _ := v.(string)
	return s
}

// Addrs returns the host's listen addresses as full multiaddrs ending in
// /p2p/<id>, the form Connect and --join accept.
func (h *Host) Addrs() []ma.Multiaddr {
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: h.h.ID(), Addrs: h.h.Addrs()})
	if err != nil { // only when the id is empty, which a running host never has
		return nil
	}
	return addrs
}

// Connect connects to the peer named by addr, a multiaddr ending in
// /p2p/<id>. The address is kept in the peerstore permanently, so that Raft
// (which dials by peer id) can redial the peer after the connection drops.
//
// A peer that is not on this host's private network (another key, or none)
// is refused; depending on which side lacks the key the refusal is immediate
// or comes only when ctx ends, so pass a ctx with a deadline.
func (h *Host) Connect(ctx context.Context, addr string) error {
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		return fmt.Errorf("p2p: connect %q: %w", addr, err)
	}
	info, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		return fmt.Errorf("p2p: connect %q: need a multiaddr with /p2p/<id>: %w", addr, err)
	}
	h.h.Peerstore().AddAddrs(info.ID, info.Addrs, peerstore.PermanentAddrTTL)
	// An explicit connect dials now, even if an earlier dial failed: the
	// caller paces its retries, and a retry should fail with the real
	// reason, not libp2p's "dial backoff".
	if sw, ok := h.h.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(info.ID)
	}
	if err := h.h.Connect(ctx, *info); err != nil {
		return fmt.Errorf("p2p: connect %s: %w", addr, explainConnectError(h.private, err))
	}
	return nil
}

// LibP2P returns the underlying libp2p host for other packages (DHT,
// forwarding). Do not Close it; close the Host.
func (h *Host) LibP2P() host.Host { return h.h }

// Close stops listening and closes every connection.
func (h *Host) Close() error {
	return h.h.Close()
}

// LoadPrivateNetworkKey reads a private network key in libp2p's swarm.key
// format ("/key/swarm/psk/1.0.0/", an encoding line such as "/base16/",
// then the key), as written by ipfs-swarm-key-gen and used by IPFS/Kubo.
func LoadPrivateNetworkKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("p2p: private network key: %w", err)
	}
	defer f.Close()
	psk, err := pnet.DecodeV1PSK(f)
	if err != nil {
		return nil, fmt.Errorf("p2p: private network key %s is not a libp2p swarm.key (/key/swarm/psk/1.0.0/ header, encoding line, key): %w", path, err)
	}
	if len(psk) != pskLen {
		return nil, fmt.Errorf("p2p: private network key %s: key is %d bytes, want %d", path, len(psk), pskLen)
	}
	return psk, nil
}

// loadOrCreateIdentity reads the host key at path or, if there is none,
// creates an Ed25519 key there (mode 0600, written to a temporary file and
// renamed, so a crash never leaves a half-written key).
func loadOrCreateIdentity(path string) (key crypto.PrivKey, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		key, err := crypto.UnmarshalPrivateKey(b)
		if err != nil {
			return nil, false, fmt.Errorf("p2p: identity key %s: %w", path, err)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("p2p: identity key: %w", err)
	}
	key, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("p2p: generate identity key: %w", err)
	}
	b, err = crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("p2p: encode identity key: %w", err)
	}
	if err := writeFileAtomic(path, b); err != nil {
		return nil, false, fmt.Errorf("p2p: write identity key: %w", err)
	}
	return key, true, nil
}

func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// tcpOnly returns the addresses in addrs that are not QUIC.
func tcpOnly(addrs []string) []string {
	var out []string
	for _, s := range addrs {
		m, err := ma.NewMultiaddr(s)
		if err != nil {
			continue
		}
		if _, err := m.ValueForProtocol(ma.P_QUIC_V1); err == nil {
			continue
		}
		if _, err := m.ValueForProtocol(ma.P_UDP); err == nil {
			continue
		}
		out = append(out, s)
	}
	return out
}

var _ io.Closer = (*Host)(nil)

// RaftAddress is the address other members use to reach this host, with
// /p2p/<id>: Config.Advertise, or the listen address chosen for it (see
// advertise.go).
func (h *Host) RaftAddress() string {
	return h.adv.Load().addr.String() + "/p2p/" + h.h.ID().String()
}
