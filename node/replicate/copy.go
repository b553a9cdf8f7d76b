package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// Ref is a blob a manifest names.
type Ref struct {
	Digest digest.Digest
	Size   int64
}

// target is how many nodes should hold each blob now:
// min(Replicas, live nodes), this one included.
func (r *Replicator) target(live []peer.ID) int {
	return min(r.cfg.Replicas, 1+len(live))
}

// Ensure returns once every blob in refs is held by min(Replicas, live
// nodes) nodes, asking peers that lack a blob to fetch it. It is what
// makes a pushed image survive the loss of the node it was pushed to.
func (r *Replicator) Ensure(ctx context.Context, refs []Ref) error {
	live := r.cfg.Cluster.Live()
	target := r.target(live)
	if target <= 1 || len(refs) == 0 {
		return nil
	}
	digests := make([]digest.Digest, len(refs))
	for i, ref := range refs {
		digests[i] = ref.Digest
	}
	has := r.Holders(ctx, live, digests)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for _, ref := range refs {
		g.Go(func() error {
			held := has[ref.Digest]
			if r.cfg.Blobs.Verify(gctx, ref.Digest, false, nil) == nil {
				held = append([]peer.ID{r.cfg.Net.ID()}, held...)
			}
			return r.copyBlob(gctx, ref, held, live, target)
		})
	}
	return g.Wait()
}

// copyBlob asks live peers that lack blob ref to fetch it until target
// nodes hold it, spreading copies over zones first.
func (r *Replicator) copyBlob(ctx context.Context, ref Ref, held, live []peer.ID, target int) error {
	if len(held) >= target {
		return nil
	}
	if len(held) == 0 {
		// Its holders are unreachable (down, or across a partition). The
		// blob was committed on some node when it was pushed; refusing the
		// manifest would not bring it back, and the holders' repair loops
		// restore its copies once they return.
		r.cfg.Log.Warn("no live node holds a blob the manifest names; storing the manifest anyway",
			"digest", ref.Digest, "live_nodes", len(live)+1)
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
	r.cfg.Cluster.SpreadFirst(lacking)
	count := len(held)
	var errs []error
	for _, p := range lacking {
		if count >= target {
			break
		}
		if err := r.askCopy(ctx, p, ref, from); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p, err))
			continue
		}
		r.copied()
		count++
	}
	if count < target && !slices.Contains(held, r.cfg.Net.ID()) {
		// No other live node lacks it (two live nodes, say): this node,
		// which the manifest came through, makes the next copy itself.
		if err := r.replicate(ctx, Request{Digest: ref.Digest, Size: ref.Size, From: from}); err != nil {
			errs = append(errs, fmt.Errorf("this node: %w", err))
		} else {
			r.copied()
			count++
		}
	}
	if count < target {
		return fmt.Errorf("blob %s is held by %d of %d nodes: %w", ref.Digest, count, target, errors.Join(errs...))
	}
	return nil
}

// askCopy asks peer p to fetch and hold blob ref (from names holders) and
// returns once p holds it, or why it does not.
func (r *Replicator) askCopy(ctx context.Context, p peer.ID, ref Ref, from []string) error {
	req, _ := json.Marshal(Request{Digest: ref.Digest, Size: ref.Size, From: from})
	rctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	resp, err := r.cfg.Net.Request(rctx, p, ReplicateProtocol, req, r.cfg.MaxMessage)
	var res Result
	if err == nil {
		err = json.Unmarshal(resp, &res)
	}
	if err == nil && res.Error != "" {
		err = errors.New(res.Error)
	}
	return err
}

func (r *Replicator) copied() {
	if r.cfg.Copies != nil {
		r.cfg.Copies.Inc()
	}
}
