package node

import (
	"context"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/node/gc"
	"github.com/meshreg/meshreg/p2p"
)

// The seams below the node: the four parts a node is made of, as the small
// interfaces it uses. Open wires the real ones (blobstore.Store,
// consensus.Store, p2p.Host, p2p.Routing); node's tests wire in-memory
// fakes (package nodefake), and each interface has a conformance suite that
// both pass (seams_test.go). All methods may be called concurrently.

// Parts are what New composes a node from. New takes ownership of Meta,
// Transport and Providers (Close closes them); Blobs stays the caller's.
type Parts struct {
	Blobs     BlobStore
	Meta      Metadata
	Transport Transport
	Providers Providers
	// Files, if not nil, lets garbage collection delete blob files (the
	// same store as Blobs); nil: this node frees nothing on its disk.
	Files gc.Files
}

// MetadataReader reads the replicated metadata. Reads are local: on a
// follower they may lag the leader (catchUp waits for it).
type MetadataReader interface {
	Manifest(repo string, d digest.Digest) (consensus.ManifestRecord, error)
	ResolveTag(repo, tag string) (digest.Digest, error)
	Tags(repo, last string, n int) ([]string, error)
	Repositories(last string, n int) ([]string, error)
	BlobLink(repo string, d digest.Digest) (int64, error)
	Referrers(repo string, subject digest.Digest, artifactType, last string, n int) ([]ocispec.Descriptor, error)
	// AppliedIndex is how far this node has applied the log: a read after
	// it reaches an index sees every write up to that index.
	AppliedIndex() uint64
	// WaitApplied returns once this node applied the log up to index.
	WaitApplied(ctx context.Context, index uint64) error
	// ReadIndex, on the leader, confirms the leadership and returns an
	// index covering every write acknowledged before the call: a node that
	// applied up to it may answer a miss as "not found". Elsewhere it fails
	// with consensus.ErrNotLeader.
	ReadIndex(ctx context.Context) (uint64, error)
}

// MetadataWriter changes the replicated metadata. A write returns once
// committed and applied on this node (a follower forwards it to the
// leader); it fails with consensus.ErrNotLeader when no leader is known.
type MetadataWriter interface {
	PutManifest(ctx context.Context, m consensus.ManifestRecord, tags ...string) error
	// CheckPutManifest validates a manifest write as the apply would,
	// without writing (the proposer's check before Raft).
	CheckPutManifest(m consensus.ManifestRecord, tags ...string) error
	DeleteManifest(ctx context.Context, repo string, d digest.Digest) error
	DeleteTag(ctx context.Context, repo, tag string) error
	LinkBlob(ctx context.Context, repo string, d digest.Digest, size int64) error
	UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error
	// ApplyForwarded applies, on the leader, a command a follower
	// forwarded (see forwarder).
	ApplyForwarded(ctx context.Context, cmd []byte) error
}

// Membership is the Raft cluster: who is in it, who leads, and the
// changes only the leader makes.
type Membership interface {
	Status() consensus.Status
	// Ready reports whether writes can be committed now (a leader is known).
	Ready() bool
	Members() ([]consensus.Member, error)
	AddNonvoter(ctx context.Context, id, addr string) error
	Promote(ctx context.Context, id string) error
	RemoveServer(ctx context.Context, id string) error
	TransferLeadership(ctx context.Context) error
	BootstrapWith(servers []consensus.Server) error
	// Watch returns this node's view of the cluster (role, leader, term,
	// membership index) and a channel of the views after each change; a
	// slow reader may miss intermediate views but always gets the latest.
	Watch(ctx context.Context) (consensus.State, <-chan consensus.State)
}

// Metadata is the whole metadata store a node runs on.
type Metadata interface {
	MetadataReader
	MetadataWriter
	Membership
	io.Closer
}

// Identity is who this node is on the peer network.
type Identity interface {
	ID() peer.ID
	// Addrs are the listen addresses, as multiaddrs ending in /p2p/<id>.
	Addrs() []ma.Multiaddr
	// RaftAddress is the address other members reach this node at.
	RaftAddress() string
	// PrivateKey signs what peers must trust came from ID (join tokens).
	PrivateKey() crypto.PrivKey
	// AgentVersion is what peer p said it runs (libp2p identify's user
	// agent; features.go reads the newest Raft op in it), "" when this
	// node never heard from p.
	AgentVersion(p peer.ID) string
}

// PeerRequester asks other peers: control requests (one message each way)
// and blob transfers.
type PeerRequester interface {
	Request(ctx context.Context, to peer.ID, proto protocol.ID, req []byte, maxLen int) ([]byte, error)
	// FetchBlob asks from for a blob; with a BlobOK answer the body
	// follows, and fails once it moves no bytes for idle.
	FetchBlob(ctx context.Context, from peer.ID, req p2p.BlobRequest, idle time.Duration) (p2p.BlobAnswer, io.ReadCloser, error)
}

// Connections are the links to other peers.
type Connections interface {
	// Connect connects to a multiaddr ending in /p2p/<id> and remembers it.
	Connect(ctx context.Context, addr string) error
	// Dial connects to a peer at the addresses known for it.
	Dial(ctx context.Context, p peer.ID) error
	Connected(p peer.ID) bool
	RememberPeer(info peer.AddrInfo)
}

// ProtocolServer answers this node's protocols. Handlers run on their own
// goroutines; the authorizer is asked before any handler, for every
// inbound stream.
type ProtocolServer interface {
	HandleRequests(proto protocol.ID, maxLen int, timeout time.Duration, fn p2p.HandlerFunc)
	ServeBlobs(idle time.Duration, fn p2p.BlobServer)
	SetAuthorizer(fn p2p.Authorizer)
	// RefusedStreams counts the inbound streams the authorizer refused.
	RefusedStreams() int64
}

// Transport is the peer network as a node uses it.
type Transport interface {
	Identity
	PeerRequester
	Connections
	ProtocolServer
	io.Closer
}

// Providers is the provider routing (the DHT): which peers hold a blob.
type Providers interface {
	// Provide announces that this node holds d.
	Provide(ctx context.Context, d digest.Digest) error
	// FindProviders returns up to limit peers that announced d.
	FindProviders(ctx context.Context, d digest.Digest, limit int) ([]peer.ID, error)
	// AddPeer offers p to the routing table (a member this node reached).
	AddPeer(p peer.ID)
	// RoutingTableSize is how many peers the routing knows; 0: alone.
	RoutingTableSize() int
	io.Closer
}

// BlobReader reads the blobs held on this node's disk. Errors wrap the
// sentinels of package blobstore (ErrNotFound, ErrCorrupt, ...).
type BlobReader interface {
	Stats() (blobs, bytes int64)
	// Walk calls fn for every blob held until fn returns false.
	Walk(fn func(d digest.Digest, size int64) bool) error
	// Held reports whether a complete copy of d is here, unchanged since
	// it was verified.
	Held(d digest.Digest) bool
	// Verify re-hashes d when needed (or always, with force), calling
	// throttle (if not nil) before each chunk; a corrupt copy is
	// quarantined, reported to the OnCorrupt callback, and Verify fails
	// with blobstore.ErrCorrupt; a missing one with blobstore.ErrNotFound.
	Verify(ctx context.Context, d digest.Digest, force bool, throttle func(n int) error) error
	// OpenVerified opens d for a reader that must never get wrong bytes:
	// a corrupt copy fails the read (blobstore.ErrCorrupt) before its end,
	// and is quarantined and reported as Verify does. It can seek (ranges).
	OpenVerified(d digest.Digest) (io.ReadSeekCloser, int64, error)
	// Quarantined is how many corrupt copies were moved aside.
	Quarantined() int64
	// OnCorrupt sets the function told of each corrupt copy, once each, on
	// the goroutine that found it; set it before the store is used.
	OnCorrupt(fn func(d digest.Digest, size int64, cause error))
}

// BlobWriter stores blobs, whole or as they arrive from peers.
type BlobWriter interface {
	// Put stores the bytes of r as d and returns their size; bytes that do
	// not match d fail with blobstore.ErrDigestMismatch and keep nothing.
	// Putting a blob held already succeeds (concurrent pushes of one blob).
	Put(d digest.Digest, r io.Reader) (int64, error)
	// NewPartial starts a copy of d written as it arrives from a peer (the
	// fetch engine is its only user, so the interface is fetch's).
	NewPartial(d digest.Digest, size int64) (fetch.Partial, error)
}

// Upload is one client upload session (blobstore.Upload on disk). Append,
// Commit and Cancel on one session are serialised; ID and Size never block.
type Upload interface {
	// ID is the session's id, as in its URL.
	ID() string
	// Size is how many bytes the session holds.
	Size() int64
	// Append adds r's bytes at the end; if r fails midway the session is
	// left as it was before the call.
	Append(r io.Reader) (int64, error)
	// Commit stores the bytes as blob d and ends the session. On a
	// mismatch it fails with blobstore.ErrDigestMismatch and the session
	// stays open, unchanged.
	Commit(d digest.Digest) (int64, error)
	// Cancel ends the session and drops its bytes.
	Cancel() error
}

// Uploads are the client upload sessions in progress. A session ended
// (committed, cancelled, expired) is blobstore.ErrUploadNotFound.
type Uploads interface {
	// NewUploadFor starts a session for owner ("": none); at a limit it
	// fails with blobstore.ErrTooManyUploads and starts nothing.
	NewUploadFor(owner string) (Upload, error)
	Upload(id string) (Upload, error)
	// ExpireUploads cancels the sessions idle for longer than idle and
	// says how many; a session in the middle of a call is never idle.
	ExpireUploads(idle time.Duration) int
	OpenUploads() int
	// SetUploadLimits bounds the sessions NewUploadFor opens from now on.
	SetUploadLimits(l blobstore.UploadLimits)
}

// BlobStore is the blob storage a node runs on.
type BlobStore interface {
	BlobReader
	BlobWriter
	Uploads
}

var (
	_ Metadata  = (*consensus.Store)(nil)
	_ Transport = (*p2p.Host)(nil)
	_ Providers = (*p2p.Routing)(nil)
	_ BlobStore = diskBlobs{}
)
