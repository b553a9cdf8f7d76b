// Package node composes a registry node from its parts: the blob store on
// local disk and the replicated metadata. It implements the read and write
// paths that package api serves over HTTP, and owns the node's background
// loops.
package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/buildinfo"
	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/node/replicate"
	"github.com/meshreg/meshreg/p2p"
)

// Config is what a node needs to know to run.
type Config struct {
	// DataDir holds the blobs and the metadata:
	//
	//	<DataDir>/
	//	├── blobs/<alg>/<2 hex>/<hex>   blob contents (package blobstore)
	//	├── uploads/<id>                upload sessions in progress
	//	├── p2p/identity.key            the libp2p identity: peer id = Raft server id
	//	└── meta/                       Raft log, snapshots and FSM (package consensus)
	DataDir string
	// P2P configures the libp2p host; its DataDir is filled in.
	P2P p2p.Config
	// Join names members of an existing cluster to join (multiaddrs with
	// /p2p/<id>, or http(s) URLs of their API). Without it a node with no
	// state bootstraps a one-node cluster of itself.
	Join []string
	// BootstrapExpect, when above 1, makes a node with no state wait until
	// it has seen that many nodes (itself included) through Join before one
	// of them bootstraps a cluster of that many, or until it hears from a
	// member of an existing cluster, which it joins (see bootstrap.go).
	BootstrapExpect int
	// JoinToken is the join token (issued by a member, see admission.go)
	// this node presents when it joins through Join. Not needed with a
	// cluster key.
	JoinToken string
	// Voters is how many voters the leader keeps, promoting non-voters
	// (an odd count: an even Voters keeps one less; see promotion.go).
	Voters int
	// StabilizationTime is how long a non-voter must stay healthy and
	// caught up with the leader's log before it is promoted to voter.
	StabilizationTime time.Duration
	// DeadServerTimeout is how long a member may stay unreachable before
	// the leader removes it from the cluster for good.
	DeadServerTimeout time.Duration
	// UploadIdleTimeout expires upload sessions that received nothing for
	// this long.
	UploadIdleTimeout time.Duration
	// MaxUploads bounds the upload sessions open on this node, and
	// MaxUploadsPerClient those one client (its IP address) has open; a
	// start past either gets 429 TOOMANYREQUESTS.
	MaxUploads, MaxUploadsPerClient int
	// Version is reported in the status document and recorded in the data
	// dir's FORMAT; Build is the whole build stamp (status, metrics).
	Version string
	Build   buildinfo.Info
	// Consensus tunes the metadata store; Dir and NodeID are filled in.
	Consensus consensus.Config

	// Region and Zone say where the node runs; a node fetches blobs from
	// peers in its own zone first, then its own region.
	Region, Zone string
	// Replicas is how many nodes must hold every blob of a manifest before
	// the manifest PUT is acknowledged (fewer when fewer nodes are live).
	Replicas int
	// RepairInterval is how often the node checks that the blobs it holds
	// still have Replicas live copies, and has missing ones made.
	RepairInterval time.Duration
	// ReprovideInterval is how often the node announces every blob it
	// holds in the DHT again (records expire after 48 h).
	ReprovideInterval time.Duration
	// PeerIdleTimeout is how long a blob transfer between peers may move
	// no bytes before it is abandoned (the fetcher tries the next holder).
	PeerIdleTimeout time.Duration
	// MinFreeDisk is the free space (bytes) the node keeps on its data
	// dir's filesystem: below it, blob uploads and metadata writes are
	// refused with 507 (see disk.go). 0 turns the early refusal off.
	MinFreeDisk int64
	// ScrubRate bounds how many bytes a second the background scrub reads
	// to re-hash stored blobs; 0 turns the scrub off.
	ScrubRate int64
	// ScrubInterval is the pause between two scrub passes over every blob.
	ScrubInterval time.Duration
}

// DefaultConfig returns the configuration of `meshreg serve` with no flags.
func DefaultConfig() Config {
	return Config{
		DataDir:           "meshreg-data",
		P2P:               p2p.DefaultConfig(),
		Voters:            3,
		StabilizationTime: 10 * time.Second,
		DeadServerTimeout: time.Minute,
		UploadIdleTimeout: time.Hour,
		Version:           buildinfo.Read().Version,
		Build:             buildinfo.Read(),
		Consensus:         consensus.DefaultConfig(),
		Replicas:          2,
		RepairInterval:    time.Minute,
		ReprovideInterval: 12 * time.Hour,
		PeerIdleTimeout:   30 * time.Second,
		MinFreeDisk:       DefaultMinFreeDisk,
		ScrubRate:         DefaultScrubRate,
		ScrubInterval:     DefaultScrubInterval,

		MaxUploads:          1000,
		MaxUploadsPerClient: 100,
	}
}

// Validate reports the settings that cannot work.
func (c Config) Validate() error {
	if err := c.checkRanges(); err != nil { // limits.go
		return err
	}
	switch {
	case c.DataDir == "":
		return errors.New("node: data dir is empty: pass --data-dir")
	case c.BootstrapExpect > 1 && len(c.Join) == 0:
		return errors.New("node: --bootstrap-expect needs --join to name the other nodes")
	case c.BootstrapExpect > 1 && len(c.P2P.PrivateNetworkKey) == 0 && len(c.JoinToken) < minHelloSecretLen:
		return fmt.Errorf("node: --bootstrap-expect needs --cluster-key, or the same --join-token (a secret of at least %d characters) on every node "+
			"that starts together: without either, anyone could pose as one of them", minHelloSecretLen)
	}
	return nil
}

// Node is one registry node. Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	opts    options // test harness options (options.go)
	blobs   BlobStore
	meta    Metadata
	host    Transport
	routing Providers
	log     *slog.Logger
	started time.Time
	metrics *nodeMetrics
	peers   *peerBook
	load    uploadLoad // recent bytes sent to peers
	disk    *diskGuard // refuses writes when the disk is nearly full
	scrub   *scrubber  // re-hashes stored blobs in the background
	// gate says which peers may open which protocols (the host's
	// authorizer) and holds the peers admitted before they are members.
	gate *peerGate
	// wasRemoved is set once the node logged that it was removed.
	wasRemoved atomic.Bool
	// dirLock is the data dir's exclusive lock (datadir.go), released last
	// by Close; nil for a node made with New.
	dirLock io.Closer
	// join is what the node waits for to become a member (joinstate.go);
	// boot its side of the --bootstrap-expect exchange (bootstrap.go).
	join joinState
	boot bootState

	// ctx ends when Close begins; background work started by requests
	// (fetches, announcements, replica copies) runs under it, owned by bg
	// (work.go).
	ctx context.Context
	bg  *workers
	// fatal receives the metadata store's storage failure (OnFatal); Run
	// returns it.
	fatal chan error

	// fetches copies blobs from peers to this disk, once each (fetch.go).
	fetches *fetch.Engine
	// replicas keeps --replicas copies of blobs (replicas.go).
	replicas *replicate.Replicator

	fetchMu         sync.Mutex                        // guards serving
	serving         map[digest.Digest]map[peer.ID]int // peers this node sends each blob to
	underReplicated atomic.Int64                      // after the last repair sweep

	mu      sync.Mutex
	uploads map[string]string // upload id → repository it was opened for
	seen    map[string]string // peer id → Raft address, for --bootstrap-expect
	// lastContact is when this node last had a connection to each member.
	lastContact map[string]time.Time
}

var (
	_ api.Registry = (*Node)(nil)
	_ api.Node     = (*Node)(nil)
)

// Open opens the blob store, starts the libp2p host, opens the metadata
// store with Raft over libp2p, and returns a node over them.
func Open(cfg Config, log *slog.Logger, opts ...Option) (n *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lock, err := claimDataDir(cfg.DataDir, cfg.Version, log) // before anything touches the data dir
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = lock.Close()
		}
	}()
	blobs, err := blobstore.Open(cfg.DataDir, log.With("component", "blobstore"))
	if err != nil {
		return nil, fmt.Errorf("node: opening blob store in %s: %w", cfg.DataDir, err)
	}
	pc := cfg.P2P
	pc.DataDir = cfg.DataDir
	pc.Logger = log.With("component", "p2p")
	pc.RouteTargets = routeTargets(cfg.Join) // advertise.go
	host, err := p2p.NewHost(pc)
	if err != nil {
		return nil, fmt.Errorf("node: starting the libp2p host: %w", err)
	}
	// Only members may reach the cluster protocols (see gate.go): until New
	// installs the node's gate, nobody may.
	host.SetAuthorizer(func(peer.ID, protocol.ID) bool { return false })
	defer func() {
		if err != nil {
			_ = host.Close()
		}
	}()
	cc := cfg.Consensus
	cc.Dir = filepath.Join(cfg.DataDir, "meta")
	cc.NodeID = host.ID().String()
	cc.Logger = log.With("component", "consensus")
	cc.Transport = raft.NewNetworkTransport(p2p.NewRaftStreamLayer(host), 3, 10*time.Second, slogWriter{log.With("component", "raft-transport")})
	fw := &forwarder{host: host}
	cc.Forwarder = fw
	// A joiner waits to be added; a restarted joiner has Raft state and
	// would not bootstrap anyway.
	cc.NoBootstrap = len(cfg.Join) > 0 || cfg.BootstrapExpect > 1
	// The metadata store calls OnFatal once, when its database fails: Run
	// then returns the error and the process stops (see serve).
	fatal := make(chan error, 1)
	cc.OnFatal = func(err error) { fatal <- err }
	meta, err := consensus.Open(cc)
	if err != nil {
		return nil, fmt.Errorf("node: opening metadata in %s: %w", cc.Dir, err)
	}
	fw.waitApplied = meta.WaitApplied
	routing, err := p2p.NewRouting(host, log.With("component", "dht"))
	if err != nil {
		_ = meta.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	n = New(cfg, Parts{Blobs: blobs, Meta: meta, Transport: host, Providers: routing}, log, opts...)
	n.fatal = fatal
	n.dirLock = lock
	return n, nil
}

// New returns a node over its parts (an open blob store, metadata store,
// peer transport and provider routing); Close closes the last three. It
// makes the node's gate the transport's authorizer (from then on only
// members reach the cluster protocols) and registers the node's protocols.
func New(cfg Config, parts Parts, log *slog.Logger, opts ...Option) *Node {
	blobs, meta, host := parts.Blobs, parts.Meta, parts.Transport
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg: cfg, blobs: blobs, meta: meta, host: host, routing: parts.Providers, log: log,
		started: time.Now(), metrics: newNodeMetrics(), peers: newPeerBook(peerLabels{Region: cfg.Region, Zone: cfg.Zone}),
		ctx: ctx, bg: newWorkers(ctx, cancel),
		serving: map[digest.Digest]map[peer.ID]int{},
		uploads: map[string]string{}, seen: map[string]string{}, lastContact: map[string]time.Time{},
	}
	for _, o := range opts {
		o(&n.opts)
	}
	n.underReplicated.Store(-1) // no sweep yet
	n.disk = newDiskGuard(cfg.DataDir, cfg.MinFreeDisk, func() string { return n.host.ID().String() },
		n.metrics.writesRefused.WithLabelValues("disk"), log.With("component", "disk"))
	n.disk.warnSmall()
	n.fetches = n.newFetches()
	n.replicas = n.newReplicas()
	n.scrub = newScrubber(blobs, n.metrics.scrubbed, cfg.ScrubRate, cfg.ScrubInterval, log)
	blobs.OnCorrupt(n.blobCorrupt)
	n.gate = newPeerGate()
	n.gate.helloOpen = n.privateNetwork() || n.sharedSecret() != ""
	var members Membership = meta
	n.gate.meta.Store(&members)
	host.SetAuthorizer(n.gate.allow)
	blobs.SetUploadLimits(blobstore.UploadLimits{PerStore: cfg.MaxUploads, PerOwner: cfg.MaxUploadsPerClient})
	n.serveProtocols(host)
	return n
}

// serveProtocols registers the node's side of every protocol it answers.
func (n *Node) serveProtocols(s ProtocolServer) {
	s.HandleRequests(forwardProtocol, maxForwardLen, rpcTimeout, n.diskChecked(n.serveForwarded))
	s.HandleRequests(memberProtocol, maxControlLen, rpcTimeout, n.serveMember)
	s.HandleRequests(helloProtocol, maxControlLen, rpcTimeout, n.serveHello)
	s.HandleRequests(indexProtocol, maxControlLen, rpcTimeout, n.serveIndex)
	s.HandleRequests(healthProtocol, maxControlLen, rpcTimeout, n.serveHealth)
	s.HandleRequests(infoProtocol, maxControlLen, rpcTimeout, n.serveInfo)
	s.HandleRequests(replicate.HasProtocol, maxControlLen, rpcTimeout, n.replicas.ServeHas)
	s.HandleRequests(replicate.ReplicateProtocol, maxControlLen, replicate.Timeout, n.replicas.ServeReplicate)
	s.HandleRequests(vouchProtocol, maxControlLen, rpcTimeout, n.serveVouch)
	s.ServeBlobs(n.cfg.PeerIdleTimeout, n.serveBlob)
}

// Run runs the node's background loops until ctx ends: joining the
// cluster, promoting non-voters (on the leader), expiring idle uploads;
// and keeping connected to every member, admitting vouched-for peers,
// re-replicating, re-announcing and scrubbing blobs. They run in one
// errgroup (loops.go): a failure of the metadata store's storage stops
// them all, and Run returns it. Run returns once every loop has stopped.
func (n *Node) Run(ctx context.Context) error {
	join := loopFunc(n.joinLoop)
	if n.cfg.BootstrapExpect > 1 {
		join = n.expectLoop
	}
	return runLoops(ctx,
		storageWatch{failed: n.fatal},
		newMesher(meshEvery, n.meshRound),
		n.scrub,
		newVoucher(n.gate.unknownRaft, n.vouched, func(p peer.ID) { n.gate.admit(p, admissionTTL) }, n.log),
		replicate.NewRepairer(n.cfg.RepairInterval, n.replicas.Sweep, &n.underReplicated, n.log),
		newReprovider(n.blobs, n.routing, n.provide, n.cfg.ReprovideInterval, n.log),
		join,
		loopFunc(n.membershipLoop),
		newUploadExpiry(n.blobs, n.cfg.UploadIdleTimeout, n.forgetExpiredUploads, n.log),
	)
}

// forgetExpiredUploads drops the upload sessions the blob store expired
// from the node's record of who opened them.
func (n *Node) forgetExpiredUploads() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.uploads {
		if _, err := n.blobs.Upload(id); errors.Is(err, blobstore.ErrUploadNotFound) {
			delete(n.uploads, id)
		}
	}
}

// Close hands leadership to another voter if this node leads one, then
// closes the metadata store and the libp2p host. Callers stop serving
// requests first.
func (n *Node) Close() error {
	if n.meta.Status().State == consensus.Leader && !n.alone() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := n.meta.TransferLeadership(ctx); err != nil {
			n.log.Warn("leadership transfer before stopping failed; the others will elect a leader", "err", err)
		} else {
			n.log.Info("handed leadership over before stopping")
		}
		cancel()
	}
	n.bg.Close()
	err := errors.Join(wrapErr("closing metadata", n.meta.Close()), wrapErr("closing the DHT", n.routing.Close()),
		wrapErr("closing the libp2p host", n.host.Close()))
	if n.dirLock != nil {
		err = errors.Join(err, wrapErr("unlocking the data dir", n.dirLock.Close()))
	}
	return err
}

// alone reports whether this node is the only voter.
func (n *Node) alone() bool {
	members, err := n.meta.Members()
	if err != nil {
		return true
	}
	voters := 0
	for _, m := range members {
		if m.Suffrage == consensus.Voter {
			voters++
		}
	}
	return voters <= 1
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("node: %s: %w", what, err)
}

// Ready returns nil when the node can take writes.
func (n *Node) Ready(ctx context.Context) error {
	if n.join.removedWhileDown() || n.removed() {
		return errors.New(n.membershipProblem())
	}
	if !n.meta.Ready() {
		if w := n.join.describe(); w != "" {
			return errors.New("the metadata store has no Raft leader yet: " + w)
		}
		return errors.New("the metadata store has no Raft leader yet")
	}
	return nil
}

// Status is the document served at /_meshreg/v1/status.
type Status struct {
	NodeID      string           `json:"node_id"` // the peer id, also the Raft server id
	RaftAddress string           `json:"raft_address"`
	P2PAddrs    []string         `json:"p2p_addrs"`
	Version     string           `json:"version"`
	Build       buildinfo.Info   `json:"build"`
	DataDir     string           `json:"data_dir"`
	Uptime      string           `json:"uptime"`
	Blobs       BlobStatus       `json:"blobs"`
	Raft        consensus.Status `json:"raft"`
	Uploads     int              `json:"uploads_in_progress"`
	Region      string           `json:"region,omitempty"`
	Zone        string           `json:"zone,omitempty"`
	Replicas    int              `json:"replicas"`
	// DHTPeers is the size of the DHT routing table.
	DHTPeers int `json:"dht_peers"`
	// Peers are the nodes this one knows as sources of blobs.
	Peers []PeerStatus `json:"peers"`
	// MemberLastContact is when this node last had a libp2p connection to
	// each member (checked every second).
	MemberLastContact map[string]time.Time `json:"member_last_contact"`
	// Disk is the free space of the data dir's filesystem and whether
	// writes are refused for lack of it.
	Disk DiskStatus `json:"disk"`
	// Scrub is the background re-hashing of stored blobs.
	Scrub ScrubStatus `json:"scrub"`
	// Removed is true once this node was removed from the cluster (it
	// knows a configuration that no longer names it, or a member that
	// knows a leader told it so): it takes no writes until it joins again.
	// With --join it rejoins by itself at start, or once it finds out while
	// running (Join says through which target); without, restart it with
	// --join.
	Removed bool `json:"removed"`
	// Join is what the node waits for to become a member (a --join target
	// that fails, peers before a bootstrap, a rejoin after removal); absent
	// once it is one.
	Join *JoinStatus `json:"join,omitempty"`
}

// BlobStatus counts the blobs this node holds.
type BlobStatus struct {
	Count int64 `json:"count"`
	Bytes int64 `json:"bytes"`
	// Fetching is how many blobs are being fetched from peers now.
	Fetching int `json:"fetching"`
	// UnderReplicated is how many of the blobs this node holds had fewer
	// than min(replicas, live nodes) live copies at the last repair sweep
	// (-1: no sweep yet).
	UnderReplicated int64 `json:"under_replicated"`
	// Corrupt is how many stored blobs were found not to match their
	// digest since the node started (each quarantined and fetched again).
	Corrupt int64 `json:"corrupt"`
	// Quarantined is how many corrupt files were moved to quarantine/ in
	// the data dir since the node started.
	Quarantined int64 `json:"quarantined"`
}

func (n *Node) Status(ctx context.Context) any {
	count, bytes := n.blobs.Stats()
	fetching := n.fetches.InProgress()
	n.mu.Lock()
	uploads := len(n.uploads)
	contacts := maps.Clone(n.lastContact)
	n.mu.Unlock()
	var addrs []string
	for _, a := range n.host.Addrs() {
		addrs = append(addrs, a.String())
	}
	return Status{
		NodeID:      n.host.ID().String(),
		RaftAddress: n.host.RaftAddress(),
		P2PAddrs:    addrs,
		Version:     n.cfg.Version,
		Build:       n.cfg.Build,
		DataDir:     n.cfg.DataDir,
		Uptime:      time.Since(n.started).Round(time.Second).String(),
		Blobs:       BlobStatus{Count: count, Bytes: bytes, Fetching: fetching, UnderReplicated: n.underReplicated.Load(), Corrupt: n.metrics.corruptCount.Load(), Quarantined: n.blobs.Quarantined()},
		Raft:        n.meta.Status(),
		Uploads:     uploads,
		Region:      n.cfg.Region,
		Zone:        n.cfg.Zone,
		Replicas:    n.cfg.Replicas,
		DHTPeers:    n.routing.RoutingTableSize(),

		Peers: n.peers.snapshot(),

		MemberLastContact: contacts,

		Disk:    n.disk.status(),
		Scrub:   n.scrub.status(),
		Removed: n.removed() || n.join.removedWhileDown(),
		Join:    n.join.status(),
	}
}

// RegisterMetrics adds the node's storage gauges to reg.
func (n *Node) RegisterMetrics(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_blobs_stored", Help: "Blobs held on this node's disk."},
			func() float64 { c, _ := n.blobs.Stats(); return float64(c) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_blob_bytes_stored", Help: "Bytes of blobs held on this node's disk."},
			func() float64 { _, b := n.blobs.Stats(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_raft_applied_index", Help: "Last Raft log index applied to the metadata store."},
			func() float64 { return float64(n.meta.Status().AppliedIndex) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_dht_routing_table_peers", Help: "Peers in this node's DHT routing table."},
			func() float64 { return float64(n.routing.RoutingTableSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_blobs_under_replicated", Help: "Blobs held here with fewer live copies than min(replicas, live nodes) at the last repair sweep (-1: none yet)."},
			func() float64 { return float64(n.underReplicated.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_disk_free_bytes", Help: "Free bytes on the filesystem of the data dir (read at most once a second)."},
			func() float64 { f, _, _ := n.disk.read(false); return float64(f) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_disk_reserve_bytes", Help: "Free bytes kept on the data dir's filesystem (--min-free-disk): below it writes are refused with 507."},
			func() float64 { return float64(n.cfg.MinFreeDisk) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_upload_sessions_open", Help: "Upload sessions open on this node (at most --max-uploads; starts past it get 429)."},
			func() float64 { return float64(n.blobs.OpenUploads()) }),
	)
	reg.MustRegister(n.metrics.collectors()...)
	reg.MustRegister(buildInfoMetric(n.cfg.Build))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshreg_p2p_streams_refused_total",
		Help: "Inbound libp2p streams reset unread because the peer may not use the protocol (not a member)."},
		func() float64 { return float64(n.host.RefusedStreams()) }))
}

// Host is the node's libp2p host; the testnet harness partitions nodes
// through it. It is nil for a node whose transport is not libp2p (a fake).
func (n *Node) Host() *p2p.Host {
	h, _ := n.host.(*p2p.Host)
	return h
}
