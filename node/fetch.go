package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/p2p"
)

const (
	// fetchTimeout bounds a whole fetch of one blob.
	fetchTimeout = time.Hour
	// maxProviders is how many providers one lookup asks the DHT for.
	maxProviders = 20
	// providerTTL is how long a lookup's answer is reused.
	providerTTL = 30 * time.Second
	// lookupRounds is how many times a fetch looks for providers before it
	// gives up; provider records of a blob committed a moment ago may not
	// have reached the DHT yet.
	lookupRounds = 3
)

// errNoProvider is a fetch's failure when no peer served the blob.
var errNoProvider = errors.New("no peer holds it")

// A fetch copies one blob from peers to this node's disk, once, however
// many clients and peers wait for it. Its bytes go to a blobstore.Partial
// that those readers follow while it grows.
type fetch struct {
	d    digest.Digest
	size int64
	// sizeGuessed is set when size is not known from the metadata but
	// taken from a local copy that failed its digest (blobCorrupt): a peer
	// announcing another size is then not penalised, only skipped.
	sizeGuessed bool

	// forClient is set (under Node.fetchMu) when a client read waits on
	// the fetch: it then logs as a pull at INFO, otherwise as a copy
	// between nodes (a replica, a repair) at DEBUG.
	forClient bool

	flowing     chan struct{} // closed when the first bytes arrive, or at done
	flowingOnce sync.Once
	done        chan struct{} // closed when the fetch ended
	err         error         // why it failed; read after done

	mu     sync.Mutex
	part   *blobstore.Partial // the attempt in progress
	source peer.ID            // where the bytes come from now
	depth  int                // hops from a complete copy; 0: no source yet
}

func (f *fetch) current() *blobstore.Partial {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.part
}

func (f *fetch) setSource(p peer.ID, depth int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.source, f.depth = p, depth
}

func (f *fetch) markFlowing() { f.flowingOnce.Do(func() { close(f.flowing) }) }

// startFetch returns the fetch of d in progress, or starts one that tries
// the peers in hint first, then the providers the DHT names.
func (n *Node) startFetch(d digest.Digest, size int64, hint []peer.ID) (*fetch, error) {
	return n.startFetchSized(d, size, false, hint)
}

// startFetchSized is startFetch with a size that may be a guess (see
// fetch.sizeGuessed).
func (n *Node) startFetchSized(d digest.Digest, size int64, guessed bool, hint []peer.ID) (*fetch, error) {
	return n.startFetchFor(d, size, guessed, hint, false)
}

// startFetchFor is startFetchSized that marks the fetch as one a client
// waits for when client is set.
func (n *Node) startFetchFor(d digest.Digest, size int64, guessed bool, hint []peer.ID, client bool) (*fetch, error) {
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	if f := n.fetches[d]; f != nil {
		f.forClient = f.forClient || client
		return f, nil
	}
	if err := n.disk.check(); err != nil {
		return nil, err // a fetch writes the blob here
	}
	part, err := n.blobs.NewPartial(d, size)
	if err != nil {
		return nil, err
	}
	f := &fetch{d: d, size: size, sizeGuessed: guessed, forClient: client, part: part, flowing: make(chan struct{}), done: make(chan struct{})}
	if !n.bg.Go(func() { n.runFetch(f, hint) }) {
		part.Fail(errShuttingDown)
		return nil, errShuttingDown
	}
	n.fetches[d] = f
	return f, nil
}

// runFetch fills f from peers until the bytes are verified and committed,
// or no peer is left to try.
func (n *Node) runFetch(f *fetch, hint []peer.ID) {
	ctx, cancel := context.WithTimeout(n.ctx, fetchTimeout)
	defer cancel()
	start := time.Now()
	// Announce at once: peers that start fetching the same blob now find
	// this node and read what it already has (cut-through).
	n.bg.Go(func() { n.provide(f.d) })

	err := errNoProvider
	done := false
	if len(hint) > 0 {
		// Peers named by the asker (a replicate request) hold the blob:
		// try them before spending a DHT lookup.
		done, err = n.fetchFrom(ctx, f, hint)
	}
	for round := 0; round < lookupRounds && !done; round++ {
		if round > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(round) * 300 * time.Millisecond):
			}
		}
		if ctx.Err() != nil {
			err = ctx.Err()
			break
		}
		done, err = n.fetchFrom(ctx, f, n.candidates(ctx, f.d, hint))
	}
	n.fetchMu.Lock()
	delete(n.fetches, f.d)
	forClient := f.forClient
	n.fetchMu.Unlock()
	if err != nil {
		f.current().Fail(err)
		f.err = fmt.Errorf("fetching blob %s (%d bytes) from peers: %w", f.d, f.size, err)
		n.log.Warn("blob fetch failed", "digest", f.d, "size", f.size, "for_client", forClient, "err", err)
	} else {
		took := time.Since(start)
		n.metrics.fetchSeconds.Observe(took.Seconds())
		n.metrics.fetchRate.Observe(float64(f.size) / max(took.Seconds(), 1e-6))
		f.mu.Lock()
		source := f.source
		f.mu.Unlock()
		// A pull a client waited for is news for the operator; a copy
		// between nodes (for --replicas, or replacing a corrupt copy) is
		// routine: the repair sweep and the corruption report say so at
		// INFO, each copy only at DEBUG.
		if forClient {
			n.log.Info("fetched blob from peers", "digest", f.d, "size", f.size, "peer", source, "took", took.Round(time.Millisecond))
		} else {
			n.log.Debug("replica copy", "peer", source, "digest", f.d, "bytes", f.size, "took", took.Round(time.Millisecond))
		}
	}
	f.markFlowing()
	close(f.done)
}

// fetchFrom tries candidates in order, following redirects from busy
// peers, until the blob is committed (done) or every candidate failed.
// Bytes from a peer that stops early are kept and the next peer resumes
// after them; bytes that fail the digest are all dropped, and every peer
// that sent some is penalised.
func (n *Node) fetchFrom(ctx context.Context, f *fetch, queue []peer.ID) (done bool, err error) {
	err = errNoProvider
	tried := map[peer.ID]bool{n.host.ID(): true}
	var busy []peer.ID
	noRedirect := false
	sent := map[peer.ID]bool{} // peers whose bytes are in the current attempt
	buf := make([]byte, 1<<20)
	for {
		if len(queue) == 0 {
			if noRedirect || len(busy) == 0 {
				return false, err
			}
			// Everyone was busy: ask them again, insisting.
			queue, busy, noRedirect = busy, nil, true
			clear(tried)
			tried[n.host.ID()] = true
		}
		p := queue[0]
		queue = queue[1:]
		if tried[p] {
			continue
		}
		tried[p] = true
		part := f.current()
		written := part.Written()
		req := p2p.BlobRequest{Digest: f.d, Offset: written, NoRedirect: noRedirect,
			// Resuming mid-blob: only a complete copy can continue it
			// without risking a cycle of peers waiting on one another.
			CompleteOnly: written > 0}
		answer, body, ferr := n.host.FetchBlob(ctx, p, req, n.cfg.PeerIdleTimeout)
		switch {
		case ferr != nil:
			n.dropProvider(f.d, p)
			err = ferr
			continue
		case answer.Status == p2p.BlobBusy:
			busy = append(busy, p)
			var redirect []peer.ID
			for _, s := range answer.Redirect {
				if id, derr := peer.Decode(s); derr == nil && !tried[id] && n.isMemberPeer(id) {
					redirect = append(redirect, id)
				}
			}
			queue = append(redirect, queue...)
			continue
		case answer.Status != p2p.BlobOK:
			n.dropProvider(f.d, p)
			err = fmt.Errorf("peer %s: %s %s", p, answer.Status, answer.Message)
			continue
		case answer.Size != f.size:
			body.Close()
			if f.sizeGuessed {
				err = fmt.Errorf("peer %s announced %d bytes, the local copy had %d", p, answer.Size, f.size)
				continue
			}
			n.penalise(p, fmt.Sprintf("announced %d bytes, the blob has %d", answer.Size, f.size))
			continue
		}
		f.setSource(p, answer.Depth+1)
		sent[p] = true
		_, cerr := io.CopyBuffer(&fetchWriter{f: f, part: part, n: n}, body, buf)
		body.Close()
		if cerr != nil || part.Written() < f.size {
			// No source any more: serve no partial bytes until another
			// one is found. With every byte here (being verified and
			// made durable) the node keeps serving them.
			f.setSource("", 0)
		}
		if cerr != nil {
			err = fmt.Errorf("peer %s: %w", p, cerr)
			if errors.Is(cerr, blobstore.ErrDigestMismatch) { // sent more than the size
				n.penalise(p, cerr.Error())
			}
			n.log.Info("blob fetch from a peer stopped; trying the next", "digest", f.d, "peer", p,
				"have", part.Written(), "size", f.size, "err", cerr)
			continue
		}
		if part.Written() < f.size {
			err = fmt.Errorf("peer %s: stream ended at %d of %d bytes", p, part.Written(), f.size)
			continue
		}
		cerr = part.Commit()
		if cerr == nil {
			return true, nil
		}
		if !errors.Is(cerr, blobstore.ErrDigestMismatch) {
			return false, cerr // the disk failed, not a peer
		}
		for s := range sent {
			n.penalise(s, cerr.Error())
		}
		clear(sent)
		next, nerr := n.blobs.NewPartial(f.d, f.size)
		if nerr != nil {
			return false, nerr
		}
		f.mu.Lock()
		f.part = next
		f.mu.Unlock()
		err = cerr
	}
}

// fetchWriter writes fetched bytes into the current attempt and counts
// them.
type fetchWriter struct {
	f    *fetch
	part *blobstore.Partial
	n    *Node
}

func (w *fetchWriter) Write(b []byte) (int, error) {
	m, err := w.part.Write(b)
	w.n.metrics.bytesFetched.Add(float64(m))
	if m > 0 {
		w.f.markFlowing()
	}
	return m, err
}

func (n *Node) penalise(p peer.ID, why string) {
	n.peers.penalise(p)
	n.metrics.penalties.Inc()
	n.log.Warn("penalised a peer that sent wrong blob bytes", "peer", p, "for", penaltyTime, "why", why)
}

// askAllLimit is the cluster size up to which a fetch also asks every live
// member whether it holds the blob: one parallel round trip that finds
// the holders the DHT lookup missed (an announcement still on its way, a
// record the lookup did not reach before it settled), so the nearest
// holder is not skipped for a farther one.
const askAllLimit = 32

// candidates lists the peers to ask for d: hint first, then the holders,
// nearest first: the DHT's providers (complete copies and fetches in
// progress) and, in a cluster of at most askAllLimit live members, those
// members that say they hold it.
func (n *Node) candidates(ctx context.Context, d digest.Digest, hint []peer.ID) []peer.ID {
	// The lookup and the question to the members run side by side: the
	// first byte waits for the slower of the two, not for both.
	asked := make(chan []peer.ID, 1)
	go func() {
		var has []peer.ID
		if live := n.livePeers(); len(live) <= askAllLimit {
			has = n.holders(ctx, live, []digest.Digest{d})[d]
		}
		asked <- has
	}()
	found := n.providers(ctx, d)
	for _, p := range <-asked {
		if !contains(found, p) {
			found = append(found, p)
		}
	}
	n.peers.nearestFirst(found)
	n.leastLoadedFirst(ctx, found)
	out := append([]peer.ID{}, hint...)
	for _, p := range found {
		if !contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func contains(ps []peer.ID, p peer.ID) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

type providerEntry struct {
	peers   []peer.ID
	expires time.Time
}

// providers returns the DHT's providers of d, from a short-lived cache.
func (n *Node) providers(ctx context.Context, d digest.Digest) []peer.ID {
	n.fetchMu.Lock()
	e, ok := n.providerCache[d]
	n.fetchMu.Unlock()
	if ok && time.Now().Before(e.expires) && len(e.peers) > 0 {
		return append([]peer.ID{}, e.peers...)
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	found, err := n.routing.FindProviders(lctx, d, maxProviders)
	n.metrics.lookup.Observe(time.Since(start).Seconds())
	if err != nil {
		n.log.Debug("provider lookup failed", "digest", d, "err", err)
	}
	// A provider record names a peer; only members are trusted to serve
	// (and only members can store records here, see p2p.NewRouting).
	found = slices.DeleteFunc(found, func(p peer.ID) bool { return !n.isMemberPeer(p) })
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	if len(n.providerCache) > 10000 { // bounded: drop all rather than track age
		clear(n.providerCache)
	}
	n.providerCache[d] = providerEntry{peers: found, expires: time.Now().Add(providerTTL)}
	return append([]peer.ID{}, found...)
}

// dropProvider forgets a cached provider that failed to serve d.
func (n *Node) dropProvider(d digest.Digest, p peer.ID) {
	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	e, ok := n.providerCache[d]
	if !ok {
		return
	}
	kept := e.peers[:0:0]
	for _, q := range e.peers {
		if q != p {
			kept = append(kept, q)
		}
	}
	e.peers = kept
	n.providerCache[d] = e
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

// openFetched serves blob d (of the given size) to a client from peers:
// it joins or starts the fetch and returns a reader that follows it. It
// waits until the first bytes arrive, so that a blob no peer has is a
// BLOB_UNKNOWN error rather than a response cut short.
func (n *Node) openFetched(ctx context.Context, d digest.Digest, size int64) (io.ReadSeekCloser, error) {
	f, err := n.startFetchFor(d, size, false, nil, true)
	if err != nil {
		return nil, blobError(err, d)
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.flowing:
	}
	select {
	case <-f.done:
	default:
		if r, ok := f.current().NewReader(); ok {
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
		case <-f.done:
		}
	}
	if f.err != nil {
		n.metrics.reads.WithLabelValues("failed").Inc()
		return nil, oci.Errorf(oci.BlobUnknown, "blob %s is linked in the registry but no node could serve it: %v", d, f.err)
	}
	// Committed already: read it from disk.
	file, _, err := n.blobs.OpenVerified(d)
	if err != nil {
		return nil, blobError(err, d)
	}
	n.metrics.reads.WithLabelValues("peer").Inc()
	return file, nil
}
