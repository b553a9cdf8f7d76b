package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/meshreg/meshreg/api/oci"
)

const (
	// hasProtocol asks a peer which of a list of blobs it holds complete;
	// the request is a hasRequest, the answer a hasResult.
	hasProtocol = "/meshreg/has/1.0.0"
	// replicateProtocol asks a peer to fetch a blob and answers once the
	// peer holds it: the request is a replicateRequest, the answer a
	// replicateResult.
	replicateProtocol = "/meshreg/replicate/1.0.0"

	// hasBatch digests fit in one control message (about 75 bytes each).
	hasBatch = 512
	// replicateTimeout bounds one copy made for --replicas.
	replicateTimeout = 30 * time.Minute
	// hasTimeout bounds a has request: the answer is a stat per digest, so
	// a peer silent this long is down or cut off, and holds nothing the
	// caller can count on.
	hasTimeout = 3 * time.Second
)

type hasRequest struct {
	Digests []digest.Digest `json:"digests"`
}

type hasResult struct {
	Has []bool `json:"has"`
}

type replicateRequest struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// From names peers known to hold the blob, tried before the DHT.
	From []string `json:"from,omitempty"`
}

type replicateResult struct {
	Error string `json:"error,omitempty"`
}

func (n *Node) serveHas(ctx context.Context, from peer.ID, b []byte) []byte {
	var req hasRequest
	if json.Unmarshal(b, &req) != nil || !n.isMemberPeer(from) {
		return nil
	}
	res := hasResult{Has: make([]bool, len(req.Digests))}
	for i, d := range req.Digests {
		// A file changed since it was verified is no good copy.
		res.Has[i] = n.blobs.Held(d)
	}
	out, _ := json.Marshal(res)
	return out
}

// holders asks peers which of digests they hold complete, in parallel,
// and returns the holders of each. A peer that does not answer holds
// nothing as far as the caller can rely on.
func (n *Node) holders(ctx context.Context, peers []peer.ID, digests []digest.Digest) map[digest.Digest][]peer.ID {
	out := map[digest.Digest][]peer.ID{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			for batch := range slices.Chunk(digests, hasBatch) {
				req, _ := json.Marshal(hasRequest{Digests: batch})
				rctx, cancel := context.WithTimeout(ctx, hasTimeout)
				resp, err := n.host.Request(rctx, p, hasProtocol, req, maxControlLen)
				cancel()
				var res hasResult
				if err != nil || json.Unmarshal(resp, &res) != nil || len(res.Has) != len(batch) {
					n.log.Debug("asking a peer which blobs it holds failed", "peer", p, "err", err)
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

func (n *Node) serveReplicate(ctx context.Context, from peer.ID, b []byte) []byte {
	var req replicateRequest
	res := replicateResult{}
	switch {
	case json.Unmarshal(b, &req) != nil:
		res.Error = "bad request"
	case !n.isMemberPeer(from):
		res.Error = "not a member of this cluster"
	default:
		res.Error = errString(n.replicate(ctx, req))
	}
	out, _ := json.Marshal(res)
	return out
}

// replicate fetches a blob a peer asked this node to hold.
func (n *Node) replicate(ctx context.Context, req replicateRequest) error {
	if n.blobs.Verify(ctx, req.Digest, false, nil) == nil {
		return nil
	}
	var hint []peer.ID
	for _, s := range req.From {
		if id, err := peer.Decode(s); err == nil {
			hint = append(hint, id)
		}
	}
	f, err := n.startFetch(req.Digest, req.Size, hint)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-f.Done():
		return f.Err()
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// replicaTarget is how many nodes should hold each blob now:
// min(--replicas, live nodes), this one included.
func (n *Node) replicaTarget(live []peer.ID) int {
	return min(n.cfg.Replicas, 1+len(live))
}

// blobRef is a blob a manifest names.
type blobRef struct {
	d    digest.Digest
	size int64
}

// ensureReplicas returns once every blob in refs is held by
// min(--replicas, live nodes) nodes, asking peers that lack a blob to
// fetch it. It is what makes a pushed image survive the loss of the node
// it was pushed to.
func (n *Node) ensureReplicas(ctx context.Context, refs []blobRef) error {
	live := n.livePeers()
	target := n.replicaTarget(live)
	if target <= 1 || len(refs) == 0 {
		return nil
	}
	digests := make([]digest.Digest, len(refs))
	for i, r := range refs {
		digests[i] = r.d
	}
	has := n.holders(ctx, live, digests)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, r := range refs {
		g.Go(func() error {
			held := has[r.d]
			if n.blobs.Verify(gctx, r.d, false, nil) == nil {
				held = append([]peer.ID{n.host.ID()}, held...)
			}
			return n.copyBlob(gctx, r, held, live, target)
		})
	}
	if err := g.Wait(); err != nil {
		return oci.Wrap(oci.Unavailable, err, "the manifest is not stored: its blobs could not be copied to enough nodes (--replicas); retry the push")
	}
	return nil
}

// copyBlob asks live peers that lack blob r to fetch it until target nodes
// hold it, spreading copies over zones first.
func (n *Node) copyBlob(ctx context.Context, r blobRef, held, live []peer.ID, target int) error {
	if len(held) >= target {
		return nil
	}
	if len(held) == 0 {
		// Its holders are unreachable (down, or across a partition). The
		// blob was committed on some node when it was pushed; refusing the
		// manifest would not bring it back, and the holders' repair loops
		// restore its copies once they return.
		n.log.Warn("no live node holds a blob the manifest names; storing the manifest anyway",
			"digest", r.d, "live_nodes", len(live)+1)
		return nil
	}
	from := make([]string, len(held))
	for i, p := range held {
		from[i] = p.String()
	}
	var lacking []peer.ID
	for _, p := range live {
		if !slices.Contains(held, p) {
			lacking = append(lacking, p)
		}
	}
	n.peers.spreadFirst(lacking)
	count := len(held)
	var errs []error
	for _, p := range lacking {
		if count >= target {
			break
		}
		req, _ := json.Marshal(replicateRequest{Digest: r.d, Size: r.size, From: from})
		rctx, cancel := context.WithTimeout(ctx, replicateTimeout)
		resp, err := n.host.Request(rctx, p, replicateProtocol, req, maxControlLen)
		cancel()
		var res replicateResult
		if err == nil {
			err = json.Unmarshal(resp, &res)
		}
		if err == nil && res.Error != "" {
			err = errors.New(res.Error)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p, err))
			continue
		}
		n.metrics.replicated.Inc()
		count++
	}
	if count < target && !slices.Contains(held, n.host.ID()) {
		// No other live node lacks it (two live nodes, say): this node,
		// which the manifest came through, makes the next copy itself.
		if err := n.replicate(ctx, replicateRequest{Digest: r.d, Size: r.size, From: from}); err != nil {
			errs = append(errs, fmt.Errorf("this node: %w", err))
		} else {
			n.metrics.replicated.Inc()
			count++
		}
	}
	if count < target {
		return fmt.Errorf("blob %s is held by %d of %d nodes: %w", r.d, count, target, errors.Join(errs...))
	}
	return nil
}

// repairSweep checks every local blob once; it returns how many are still
// under-replicated and how many it copied.
func (n *Node) repairSweep(ctx context.Context) (under, repaired int, err error) {
	var batch []blobRef
	sweep := func() {
		live := n.livePeers()
		target := n.replicaTarget(live)
		digests := make([]digest.Digest, len(batch))
		for i, r := range batch {
			digests[i] = r.d
		}
		var has map[digest.Digest][]peer.ID
		if target > 1 {
			has = n.holders(ctx, live, digests)
		}
		for _, r := range batch {
			// The local copy counts only once verified (hashed now if it
			// was not since the start): a corrupt one is quarantined by
			// Verify and fetched again (blobCorrupt), not counted.
			if n.blobs.Verify(ctx, r.d, false, nil) != nil {
				continue
			}
			held := append([]peer.ID{n.host.ID()}, has[r.d]...)
			if len(held) >= target {
				continue
			}
			// One holder repairs, the others leave it: the lowest id.
			if slices.Min(held) != n.host.ID() {
				under++
				continue
			}
			if err := n.copyBlob(ctx, r, held, live, target); err != nil {
				n.log.Warn("re-replicating a blob failed", "digest", r.d, "err", err)
				under++
				continue
			}
			repaired++
		}
		batch = batch[:0]
	}
	err = n.blobs.Walk(func(d digest.Digest, size int64) bool {
		batch = append(batch, blobRef{d: d, size: size})
		if len(batch) == hasBatch {
			sweep()
		}
		return ctx.Err() == nil
	})
	if len(batch) > 0 && ctx.Err() == nil {
		sweep()
	}
	return under, repaired, err
}
