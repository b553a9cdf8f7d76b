package node

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/meshreg/meshreg/api/auth/token"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/buildinfo"
	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/node/mirror"
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
	//	├── meta/                       Raft log, snapshots and FSM (package consensus)
	//	└── notifications/<endpoint>/   webhook queues (package notify)
	DataDir string
	// Notifications is the webhooks file (--notifications; "": none), see
	// package notify.
	Notifications string
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
	// JoinHTTP is the HTTP client that reads the status of a node named by
	// an http(s) URL in Join (its Raft address); it carries the CA that
	// https URLs are verified with (serve's --join-tls-ca). Nil: Go's
	// default client (the system's roots, SSL_CERT_FILE).
	JoinHTTP *http.Client
	// Voters is how many voters the leader keeps, promoting non-voters
	// (an odd count: an even Voters keeps one less; see promotion.go).
	Voters int
	// MaxRaftMembers is the most non-voters the leader keeps in the Raft
	// configuration besides the voters; a node that asks to join past it
	// becomes a follower of the metadata (follow.go): not a member, it
	// tails the committed log from a member. 0: voters only.
	MaxRaftMembers int
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
	// FollowerPassTTL is how long the follower passes this node issues
	// are valid (followpass.go); 0: passTTL (7 days). Tests only: no flag
	// sets it, serve reads MESHREG_TEST_FOLLOWER_PASS_TTL, so that a
	// testnet test can let a follower's passes expire.
	FollowerPassTTL time.Duration
	// MinFreeDisk is the free space (bytes) the node keeps on its data
	// dir's filesystem: below it, blob uploads and metadata writes are
	// refused with 507 (see disk.go). 0 turns the early refusal off.
	MinFreeDisk int64
	// MaxDisk is the most bytes of blobs the node keeps (0: no budget):
	// past it, it evicts the least recently read blobs that --replicas
	// other live members hold, down to MaxDiskLow (0: 90% of MaxDisk); with
	// nothing to evict, new blobs are refused with 507 (see evict.go).
	MaxDisk, MaxDiskLow int64
	// ScrubRate bounds how many bytes a second the background scrub reads
	// to re-hash stored blobs; 0 turns the scrub off.
	ScrubRate int64
	// ScrubInterval is the pause between two scrub passes over every blob.
	ScrubInterval time.Duration
	// Mirror names the upstream registries the node mirrors (none: it
	// mirrors nothing); see package mirror.
	Mirror mirror.Config

	// GCInterval is how often the leader runs a garbage collection (0:
	// never; `meshreg gc` still runs one), with grace GCGrace.
	GCInterval time.Duration
	GCGrace    time.Duration

	// Origins are where blobs of mirrored repositories come from when no
	// peer holds them (the upstreams, by name); nil: none. A repository
	// <NAME>/<repo> with NAME an origin here reads from origin NAME,
	// repository <repo> (see fetch.OriginSource: one member fetches it).
	Origins fetch.Origins
	// OriginFetchPerRegion makes one member per region (of those with the
	// same Region), not one per cluster, fetch a blob from its origin,
	// unless the Origins decide per origin (fetch.RegionalOrigins).
	OriginFetchPerRegion bool
	// TokenKeys turns the token service's signing keys on: the leader
	// writes a key when the cluster has none and a new one every
	// TokenKeyRotation (loop_tokenkeys.go). TokenTTL is the tokens'
	// lifetime: how long a retired key is kept.
	TokenKeys                  bool
	TokenKeyRotation, TokenTTL time.Duration
}

// DefaultConfig returns the configuration of `meshreg serve` with no flags.
func DefaultConfig() Config {
	return Config{
		DataDir:           "meshreg-data",
		P2P:               p2p.DefaultConfig(),
		Voters:            3,
		MaxRaftMembers:    DefaultMaxRaftMembers,
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
		TokenKeyRotation:  token.DefaultRotation,
		TokenTTL:          token.DefaultTTL,
		GCInterval:        24 * time.Hour,
		GCGrace:           time.Hour,

		MaxUploads:          1000,
		MaxUploadsPerClient: 100,
	}
}

// Validate reports the settings that cannot work.
func (c Config) Validate() error {
	if err := c.checkRanges(); err != nil { // limits.go
		return err
	}
	if err := c.Mirror.Validate(); err != nil {
		return fmt.Errorf("node: %w", err)
	}
	switch {
	case c.DataDir == "":
		return errors.New("node: data dir is empty: pass --data-dir")
	case c.FollowerPassTTL != 0 && (c.FollowerPassTTL < time.Second || c.FollowerPassTTL > passTTL):
		return fmt.Errorf("node: follower pass validity %v: want 1s to %v", c.FollowerPassTTL, passTTL)
	case c.BootstrapExpect > 1 && len(c.Join) == 0:
		return errors.New("node: --bootstrap-expect needs --join to name the other nodes")
	case c.BootstrapExpect > 1 && len(c.P2P.PrivateNetworkKey) == 0 && len(c.JoinToken) < minHelloSecretLen:
		return fmt.Errorf("node: --bootstrap-expect needs --cluster-key, or the same --join-token (a secret of at least %d characters) on every node "+
			"that starts together: without either, anyone could pose as one of them", minHelloSecretLen)
	}
	return nil
}
