package node

import (
	"context"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/p2p"
)

// The fetch-once engine lives in package fetch; this is its glue: the
// sources a node fetches from (the peers), its metrics, its log, and the
// node's goroutine owner.

// newFetches returns the node's fetch engine. Call it once n.disk is set.
func (n *Node) newFetches() *fetch.Engine {
	peers := fetch.NewPeers(fetch.PeersConfig{
		Net: passingNet{n: n}, Providers: n.routing, Cluster: peerView{n: n},
		Idle: n.cfg.PeerIdleTimeout, Lookup: n.metrics.lookup, Log: n.log,
	})
	n.origins = n.newOriginSource(peers)
	return fetch.New(fetch.Config{
		Partials: fetchPartials{n: n},
		Sources:  []fetch.Source{peers, n.origins},
		Room:     func() error { return n.disk.checkBlob() },
		Held:     n.blobs.Held,
		Go: func(fn func(context.Context)) error {
			if !n.bg.Go(func() { fn(n.bg.Context()) }) {
				return errShuttingDown
			}
			return nil
		},
		Announce: n.provide,
		Metrics:  fetch.Metrics{Seconds: n.metrics.fetchSeconds, Rate: n.metrics.fetchRate, Bytes: n.metrics.bytesFetched},
		Log:      n.log,
	})
}

// startFetch returns the fetch of d in progress, or starts one that tries
// the peers in hint first, then the providers the DHT names.
func (n *Node) startFetch(d digest.Digest, size int64, hint []peer.ID) (*fetch.Fetch, error) {
	return n.fetches.Start(fetch.Request{Digest: d, Size: size, Hint: hint})
}

// fetchPartials makes a fetch's partial copies in the node's blob store,
// read at each call (a test swaps it for a slow one after New).
type fetchPartials struct{ n *Node }

func (p fetchPartials) NewPartial(d digest.Digest, size int64) (fetch.Partial, error) {
	part, err := p.n.blobs.NewPartial(d, size)
	if err != nil || p.n.evictor == nil {
		return part, err
	}
	return committedPartial{Partial: part, committed: p.n.blobCommitted}, nil
}

// committedPartial tells the node when a fetched blob is committed (the
// disk budget checks its use then).
type committedPartial struct {
	fetch.Partial
	committed func()
}

func (p committedPartial) Commit() error {
	err := p.Partial.Commit()
	if err == nil {
		p.committed()
	}
	return err
}

func (n *Node) penalise(p peer.ID, why string) {
	n.peers.penalise(p)
	n.metrics.penalties.Inc()
	n.log.Warn("penalised a peer that sent wrong blob bytes", "peer", p, "for", penaltyTime, "why", why)
}

// provide announces in the DHT that this node holds d. Failures only cost
// findability until the next sweep (see reprovider), so they are logged.
func (n *Node) provide(d digest.Digest) {
	ctx, cancel := context.WithTimeout(n.ctx, time.Minute)
	defer cancel()
	if n.routing.RoutingTableSize() == 0 {
		return // alone: nobody to tell; the sweep announces it later
	}
	if err := n.routing.Provide(ctx, d); err != nil && n.ctx.Err() == nil {
		n.log.Debug("announcing a blob in the DHT failed", "digest", d, "err", err)
	}
}

// openFetched serves blob d (of the given size) to a client from peers,
// or else from origin (nil: none): it joins or starts the fetch and
// returns a reader that follows it. It waits until the first bytes
// arrive, so that a blob no peer has is a BLOB_UNKNOWN error rather than a
// response cut short.
func (n *Node) openFetched(ctx context.Context, d digest.Digest, size int64, origin *fetch.Origin) (io.ReadSeekCloser, error) {
	n.noteRead(d, origin)
	f, err := n.fetches.Start(fetch.Request{Digest: d, Size: size, ForClient: true, Origin: origin})
	if err != nil {
		return nil, blobError(err, d)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.Flowing():
	}
	select {
	case <-f.Done():
	default:
		if r, ok := f.Current().NewReader(); ok {
			n.metrics.reads.WithLabelValues("peer").Inc()
			return r, nil
		}
		// The attempt ended: committed (the blob is on disk, or about to
		// be), or failed its digest with the next holder not begun yet.
		// Wait for the fetch rather than answer a blob it may yet bring
		// as unknown (a client retrying at once would get a 404).
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.Done():
		}
	}
	if f.Err() != nil {
		n.metrics.reads.WithLabelValues("failed").Inc()
		return nil, oci.Errorf(oci.BlobUnknown, "blob %s is linked in the registry but no node could serve it: %v", d, f.Err())
	}
	// Committed already: read it from disk.
	file, _, err := n.blobs.OpenVerified(d)
	if err != nil {
		return nil, blobError(err, d)
	}
	n.metrics.reads.WithLabelValues("peer").Inc()
	return file, nil
}

// passingNet is the fetches' network: on a follower of the metadata, a
// fetch from a peer that is not a member (another follower that holds the
// blob) presents this node's pass to it first (followpass.go; at most once
// per passRefresh per peer), so that it admits this node.
type passingNet struct{ n *Node }

func (p passingNet) ID() peer.ID { return p.n.host.ID() }

func (p passingNet) FetchBlob(ctx context.Context, from peer.ID, req p2p.BlobRequest, idle time.Duration) (p2p.BlobAnswer, io.ReadCloser, error) {
	if p.n.following() && !p.n.isMemberPeer(from) {
		if err := p.n.presentPass(ctx, from); err != nil {
			p.n.log.Debug("presenting the follower pass before a fetch failed", "peer", from, "err", err)
		}
	}
	return p.n.host.FetchBlob(ctx, from, req, idle)
}
