// Package replicate keeps copies of blobs on enough nodes: it counts the
// live holders of a blob (HasProtocol), asks peers that lack one to copy
// it (ReplicateProtocol) until --replicas nodes hold it, and sweeps the
// blobs this node holds to restore copies lost with a node (Sweep).
package replicate

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// HasProtocol asks a peer which of a list of blobs it holds complete;
	// the request is a HasRequest, the answer a HasResult.
	HasProtocol = "/meshreg/has/1.0.0"
	// ReplicateProtocol asks a peer to fetch a blob and answers once the
	// peer holds it: the request is a Request, the answer a Result.
	ReplicateProtocol = "/meshreg/replicate/1.0.0"

	// hasBatch digests fit in one control message (about 75 bytes each).
	hasBatch = 512
	// Timeout bounds one copy made for --replicas.
	Timeout = 30 * time.Minute
	// hasTimeout bounds a has request: the answer is a stat per digest, so
	// a peer silent this long is down or cut off, and holds nothing the
	// caller can count on.
	hasTimeout = 3 * time.Second
)

// HasRequest asks which of Digests a peer holds.
type HasRequest struct {
	Digests []digest.Digest `json:"digests"`
	// Hold asks the peer to keep the copies it says it holds for HoldFor:
	// the asker is about to delete its own copy counting on them (see
	// Evictor), and two nodes evicting the same blob at once must not
	// each count on the other's copy.
	Hold bool `json:"hold,omitempty"`
}

// HoldFor is how long a peer keeps a blob it said it holds in answer to a
// HasRequest with Hold; an evictor deletes its copy only within half of it.
const HoldFor = 30 * time.Second

// HasResult says, for each digest asked, whether the peer holds it.
type HasResult struct {
	Has []bool `json:"has"`
}

// Request asks a peer to fetch and hold a blob.
type Request struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// From names peers known to hold the blob, tried before the DHT.
	From []string `json:"from,omitempty"`
}

// Result is the answer to a Request: empty once the peer holds the blob.
type Result struct {
	Error string `json:"error,omitempty"`
}

// Requester asks other peers (one message each way).
type Requester interface {
	// ID is this node.
	ID() peer.ID
	Request(ctx context.Context, to peer.ID, proto protocol.ID, req []byte, maxLen int) ([]byte, error)
}

// Blobs are the blobs on this node's disk.
type Blobs interface {
	// Held reports whether a complete copy of d is here, unchanged since
	// it was verified.
	Held(d digest.Digest) bool
	// Verify re-hashes d when needed; a corrupt copy is quarantined.
	Verify(ctx context.Context, d digest.Digest, force bool, throttle func(n int) error) error
	Walk(fn func(d digest.Digest, size int64) bool) error
}

// Cluster is what replication knows of the other members. Its methods may
// be called concurrently.
type Cluster interface {
	// IsMember reports whether p is in the cluster: only members may ask.
	IsMember(p peer.ID) bool
	// Live are the members that can hold copies right now.
	Live() []peer.ID
	// SpreadFirst orders candidates for a new copy: other zones first,
	// nearest first within each.
	SpreadFirst(peers []peer.ID)
}

// Pins are the blobs in use on this node (gc.Pins): a pinned blob is
// neither collected nor evicted.
type Pins interface {
	// Pin marks d in use until release is called.
	Pin(d digest.Digest) (release func())
	// UnlessPinned runs fn while no one can pin d, unless d is pinned
	// now; it reports whether fn ran.
	UnlessPinned(d digest.Digest, fn func()) bool
}

// Fetcher brings a blob to this node's disk from peers, trying hint
// first, and returns once it is held (nil) or could not be.
type Fetcher func(ctx context.Context, d digest.Digest, size int64, hint []peer.ID) error

// Config is what a Replicator is made of.
type Config struct {
	// Replicas is how many nodes should hold each blob (fewer when fewer
	// are live).
	Replicas int
	// MaxMessage bounds a control message in either direction.
	MaxMessage int
	Net        Requester
	Blobs      Blobs
	Cluster    Cluster
	Fetch      Fetcher
	// Pins keeps the blobs this node promised to hold (HasRequest.Hold);
	// nil: such promises are not kept, and Evictor needs them.
	Pins Pins
	// Copies counts the copies made for Replicas; nil: not counted.
	Copies prometheus.Counter
	Log    *slog.Logger
}

// Replicator is this node's side of replication. Its methods are safe for
// concurrent use; it starts no goroutine that outlives a call.
type Replicator struct {
	cfg Config
}

// New returns a replicator.
func New(cfg Config) *Replicator { return &Replicator{cfg: cfg} }

// ServeHas answers a HasRequest from a member (nothing to others).
func (r *Replicator) ServeHas(ctx context.Context, from peer.ID, b []byte) []byte {
	var req HasRequest
	if json.Unmarshal(b, &req) != nil || !r.cfg.Cluster.IsMember(from) {
		return nil
	}
	res := HasResult{Has: make([]bool, len(req.Digests))}
	for i, d := range req.Digests {
		if !req.Hold || r.cfg.Pins == nil {
			// A file changed since it was verified is no good copy.
			res.Has[i] = r.cfg.Blobs.Held(d)
			continue
		}
		// Pinned before the look, so that a copy said held cannot be
		// evicted or collected here for HoldFor (the timer only releases
		// the pin: no goroutine outlives the call).
		release := r.cfg.Pins.Pin(d)
		if res.Has[i] = r.cfg.Blobs.Held(d); res.Has[i] {
			time.AfterFunc(HoldFor, release)
		} else {
			release()
		}
	}
	out, _ := json.Marshal(res)
	return out
}

// Holders asks peers which of digests they hold complete, in parallel,
// and returns the holders of each. A peer that does not answer holds
// nothing as far as the caller can rely on.
func (r *Replicator) Holders(ctx context.Context, peers []peer.ID, digests []digest.Digest) map[digest.Digest][]peer.ID {
	return r.holders(ctx, peers, digests, false)
}

// holders is Holders; with hold, each peer keeps the copies it says it
// holds for HoldFor (HasRequest.Hold).
func (r *Replicator) holders(ctx context.Context, peers []peer.ID, digests []digest.Digest, hold bool) map[digest.Digest][]peer.ID {
	out := map[digest.Digest][]peer.ID{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			for batch := range slices.Chunk(digests, hasBatch) {
				req, _ := json.Marshal(HasRequest{Digests: batch, Hold: hold})
				rctx, cancel := context.WithTimeout(ctx, hasTimeout)
				resp, err := r.cfg.Net.Request(rctx, p, HasProtocol, req, r.cfg.MaxMessage)
				cancel()
				var res HasResult
				if err != nil || json.Unmarshal(resp, &res) != nil || len(res.Has) != len(batch) {
					r.cfg.Log.Debug("asking a peer which blobs it holds failed", "peer", p, "err", err)
					return
				}
				mu.Lock()
				for i, d := range batch {
					if res.Has[i] {
						out[d] = append(out[d], p)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return out
}

// ServeReplicate answers a Request from a member once this node holds the
// blob, or with why it could not get it.
func (r *Replicator) ServeReplicate(ctx context.Context, from peer.ID, b []byte) []byte {
	var req Request
	res := Result{}
	switch {
	case json.Unmarshal(b, &req) != nil:
		res.Error = "bad request"
	case !r.cfg.Cluster.IsMember(from):
		res.Error = "not a member of this cluster"
	default:
		res.Error = errString(r.replicate(ctx, req))
	}
	out, _ := json.Marshal(res)
	return out
}

// replicate fetches a blob a peer asked this node to hold.
func (r *Replicator) replicate(ctx context.Context, req Request) error {
	if r.cfg.Blobs.Verify(ctx, req.Digest, false, nil) == nil {
		return nil
	}
	var hint []peer.ID
	for _, s := range req.From {
		if id, err := peer.Decode(s); err == nil {
			hint = append(hint, id)
		}
	}
	return r.cfg.Fetch(ctx, req.Digest, req.Size, hint)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
