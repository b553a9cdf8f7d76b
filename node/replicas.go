package node

import (
	"context"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/node/replicate"
)

// Replication lives in package replicate; this is its glue: the node's
// --replicas, its peers, its disk, its fetches and its counter.

// newReplicas returns the node's replicator. Call it once n.fetches is set.
func (n *Node) newReplicas() *replicate.Replicator {
	return replicate.New(replicate.Config{
		Replicas: n.cfg.Replicas, MaxMessage: maxControlLen,
		Net: n.host, Blobs: n.blobs, Cluster: peerView{n: n}, Fetch: n.fetchAndWait, Pins: nodePins{n: n},
		Copies: n.metrics.replicated, Log: n.log,
	})
}

// fetchAndWait fetches d from peers (hint first) and returns once it is
// held here, or why not.
func (n *Node) fetchAndWait(ctx context.Context, d digest.Digest, size int64, hint []peer.ID) error {
	f, err := n.startFetch(d, size, hint)
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

// ensureReplicas returns once every blob in refs is held by
// min(--replicas, live nodes) nodes (replicate.Replicator.Ensure).
func (n *Node) ensureReplicas(ctx context.Context, refs []replicate.Ref) error {
	if err := n.replicas.Ensure(ctx, refs); err != nil {
		return oci.Wrap(oci.Unavailable, err, "the manifest is not stored: its blobs could not be copied to enough nodes (--replicas); retry the push")
	}
	return nil
}
