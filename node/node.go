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
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/node/mirror"
	"github.com/meshreg/meshreg/node/notify"
	"github.com/meshreg/meshreg/node/replicate"
	"github.com/meshreg/meshreg/node/upstream"
	"github.com/meshreg/meshreg/p2p"
)

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
	// passLostWarned is set once a follower without --join logged that no
	// member accepts its passes (rejoinWithoutPass).
	passLostWarned atomic.Bool
	// passes is this node's follower pass, when it follows the metadata
	// (followpass.go).
	passes *passBook
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

	// readIndexes asks the leader for its read index for the reads that
	// missed, coalesced (readindex.go).
	readIndexes *readIndexes

	// fetches copies blobs from peers to this disk, once each (fetch.go).
	fetches *fetch.Engine
	// origins is the fetches' source of last resort (origin.go).
	origins *fetch.OriginSource
	// replicas keeps --replicas copies of blobs (replicas.go).
	replicas *replicate.Replicator
	// mirror answers mirrored repositories (mirror.go); nil: none.
	mirror *mirror.Mirror
	// upstreams are the mirror's clients, by name (for their gauges).
	upstreams map[string]*upstream.Registry
	// gc is garbage collection: pins, sweeper, schedule (collect.go).
	gc     *collector
	notify *notify.Notifier // nil without --notifications
	// evictor keeps the blob bytes under --max-disk (nil: no budget);
	// reads is when each blob was last read (evict.go).
	evictor      *replicate.Evictor
	reads        recency
	evictMetrics evictMetrics

	fetchMu         sync.Mutex                        // guards serving and served
	serving         map[digest.Digest]map[peer.ID]int // peers this node sends each blob to
	served          map[digest.Digest][]servedTo      // peers it sent each blob to lately (serve.go)
	underReplicated atomic.Int64                      // after the last repair sweep

	mu      sync.Mutex
	uploads map[string]string // upload id → repository it was opened for
	seen    map[string]string // peer id → Raft address, for --bootstrap-expect
	// lastContact is when this node last had a connection to each member.
	lastContact map[string]time.Time
	// leaderIdx is the leader's applied index a follower's status last
	// asked (status.go).
	leaderIdx struct {
		at     time.Time
		leader string
		index  uint64
	}

	tails tailClients // the followers this member serves (fleet.go)
	fleet fleetCache  // the last fleet view (fleet.go)

	// revoked is the revoked followers list this node applied, and its
	// own revocation; revokeMu makes a leader's revocations one at a time
	// (revoke.go).
	revoked  revocations
	revokeMu sync.Mutex
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
	pc.RouteTargets = routeTargets(cfg.Join)    // advertise.go
	pc.UserAgent = userAgent(cfg.Build.Version) // features.go
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
	notifier, err := openNotifier(cfg, host.ID().String(), log)
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	defer func() {
		if err != nil && notifier != nil {
			_ = notifier.Close()
		}
	}()
	cc := cfg.Consensus
	cc.Dir = filepath.Join(cfg.DataDir, "meta")
	cc.NodeID = host.ID().String()
	cc.Logger = log.With("component", "consensus")
	cc.Transport = raft.NewNetworkTransport(p2p.NewRaftStreamLayer(host), 3, 10*time.Second, slogWriter{log.With("component", "raft-transport")})
	fw := &forwarder{host: host}
	cc.Forwarder = fw
	// A node that follows the metadata tails it from a member (tail.go);
	// the dialer and the preference need the node, made below.
	tails := &tailDialer{}
	cc.TailDialer = tails
	cc.Version = cfg.Version
	cc.TailPrefer = func(members []consensus.Member) []consensus.Member {
		if n := tails.node.Load(); n != nil {
			return n.preferTail(members)
		}
		return members
	}
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
	n = New(cfg, Parts{Blobs: diskBlobs{blobs}, Meta: meta, Transport: host, Providers: routing, Files: blobs}, log, opts...)
	n.fatal = fatal
	n.dirLock = lock
	tails.node.Store(n)
	n.recordOwnAddress() // selfaddress.go
	n.notify = notifier
	if err := n.startMirror(); err != nil {
		n.dirLock = nil
		_ = n.Close()
		return nil, err
	}
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
		passes: newPassBook(cfg.DataDir),
	}
	for _, o := range opts {
		o(&n.opts)
	}
	n.underReplicated.Store(-1) // no sweep yet
	n.disk = newDiskGuard(cfg.DataDir, cfg.MinFreeDisk, func() string { return n.host.ID().String() },
		n.metrics.writesRefused.WithLabelValues("disk"), log.With("component", "disk"))
	n.disk.used = func() int64 { _, b := n.blobs.Stats(); return b }
	n.disk.warnSmall()
	n.readIndexes = &readIndexes{query: n.queryReadIndex, work: n.bg}
	n.fetches = n.newFetches()
	n.replicas = n.newReplicas()
	n.setUpCollector(parts.Files)
	n.evictMetrics = newEvictMetrics()
	n.setUpEviction(parts.Files)
	n.scrub = newScrubber(blobs, n.metrics.scrubbed, cfg.ScrubRate, cfg.ScrubInterval, log)
	blobs.OnCorrupt(n.blobCorrupt)
	n.gate = newPeerGate()
	n.gate.helloOpen = n.privateNetwork() || n.sharedSecret() != ""
	var members Membership = meta
	n.gate.meta.Store(&members)
	// The revoked followers before the first stream is let in.
	n.loadRevokedSelf()
	n.refreshRevocations()
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
	s.HandleRequests(mirrorProtocol, maxControlLen, rpcTimeout, n.serveMirror)
	s.HandleRequests(originProtocol, maxControlLen, rpcTimeout, n.serveOriginFetch)
	s.HandleRequests(gcReportProtocol, maxControlLen, gcReportTimeout+gcReportSlack, n.serveGCReport)
	s.HandleRequests(fleetProtocol, maxControlLen, rpcTimeout, n.serveFleet)
	s.ServeBlobs(n.cfg.PeerIdleTimeout, n.serveBlob)
	n.serveTailStreams(s) // tail.go
}

// Run runs the node's background loops until ctx ends: joining the
// cluster, promoting non-voters (on the leader), expiring idle uploads;
// and keeping connected to every member, admitting vouched-for peers,
// re-replicating, re-announcing and scrubbing blobs. They run in one
// errgroup (loops.go): a failure of the metadata store's storage stops
// them all, and Run returns it. Run returns once every loop has stopped.
func (n *Node) Run(ctx context.Context) error {
	return runLoops(ctx, append(append(n.gcLoops(), n.evictLoops()...),
		storageWatch{failed: n.fatal},
		newMesher(meshEvery, n.meshRound),
		n.scrub,
		newVoucher(n.gate.unknownRaft, n.vouched, func(p peer.ID) { n.gate.admit(p, admissionTTL) }, n.log),
		replicate.NewRepairer(n.cfg.RepairInterval, n.replicas.Sweep, &n.underReplicated, n.log),
		newReprovider(n.blobs, n.routing, n.provide, n.cfg.ReprovideInterval, n.log),
		n.joining(),
		&seeker{n: n},         // follow.go
		revocationWatch{n: n}, // revoke.go
		newMembership(n.meta, n.host.ID().String(), n.connected, n.checkHealth, n.peers.labelsOf, n.noteMembership,
			upkeepRules{DeadServerTimeout: n.cfg.DeadServerTimeout, StabilizationTime: n.cfg.StabilizationTime, Voters: n.cfg.Voters}, n.log),
		newUploadExpiry(n.blobs, n.cfg.UploadIdleTimeout, n.forgetExpiredUploads, n.log),
		n.tokenKeys(),
		n.notifications(),
	)...)
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
	if n.notify != nil {
		if err := n.notify.Close(); err != nil {
			n.log.Warn("closing the notification queues", "err", err)
		}
	}
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

// Host is the node's libp2p host; the testnet harness partitions nodes
// through it. It is nil for a node whose transport is not libp2p (a fake).
func (n *Node) Host() *p2p.Host {
	h, _ := n.host.(*p2p.Host)
	return h
}
