package node

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/node/fetch"
)

// blobCorrupt is the blob store's report of a stored blob that did not
// match its digest and was moved to quarantine (by a read for a client or
// a peer, the scrub, or the repair sweep). It counts it and fetches a good
// copy from the peers in the background; it returns at once.
func (n *Node) blobCorrupt(d digest.Digest, size int64, cause error) {
	n.metrics.corrupt.Inc()
	n.metrics.corruptCount.Add(1)
	n.log.Error("a stored blob did not match its digest: quarantined it, fetching a good copy from peers",
		"digest", d, "size", size, "cause", cause)
	if n.ctx.Err() != nil {
		return
	}
	n.bg.Go(func() {
		// The size is the corrupt file's: right for flipped bits, wrong
		// for a truncated file, so a peer that disagrees is not blamed. A
		// read that knows the size from the metadata fetches it then.
		f, err := n.fetches.Start(fetch.Request{Digest: d, Size: size, SizeGuessed: true})
		if err != nil {
			n.log.Warn("cannot fetch a good copy of a corrupt blob", "digest", d, "err", err)
			return
		}
		select {
		case <-n.ctx.Done():
			return
		case <-f.Done():
		}
		if f.Err() != nil {
			n.log.Warn("no good copy of a corrupt blob could be fetched; it is missing on this node until a peer has one",
				"digest", d, "err", f.Err())
			return
		}
		n.log.Info("replaced a corrupt blob with a good copy from a peer", "digest", d)
	})
}

// diskChecked refuses a forwarded write while this node (the leader, which
// would append it to its Raft log) is low on disk.
func (n *Node) diskChecked(serve func(ctx context.Context, from peer.ID, b []byte) []byte) func(ctx context.Context, from peer.ID, b []byte) []byte {
	return func(ctx context.Context, from peer.ID, b []byte) []byte {
		if err := n.disk.check(); err != nil {
			return forwardRefusal(err)
		}
		return serve(ctx, from, b)
	}
}

// sleepCtx waits for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
