package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/p2p"
)

const (
	// lookupRounds is how many times a fetch looks for providers before it
	// gives up; provider records of a blob committed a moment ago may not
	// have reached the DHT yet.
	lookupRounds = 3
	// askAllLimit is the cluster size up to which a fetch also asks every
	// live member whether it holds the blob: one parallel round trip that
	// finds the holders the DHT lookup missed (an announcement still on
	// its way, a record the lookup did not reach before it settled), so
	// the nearest holder is not skipped for a farther one.
	askAllLimit = 32
	// maxRedirect bounds the peers one busy answer may add to the queue.
	maxRedirect = 16
)

// ErrNoProvider is a fetch's failure when no peer served the blob.
var ErrNoProvider = errors.New("no peer holds it")

// Network moves blobs between peers.
type Network interface {
	// ID is this node, never asked.
	ID() peer.ID
	// FetchBlob asks from for a blob; with a BlobOK answer the body
	// follows, and fails once it moves no bytes for idle.
	FetchBlob(ctx context.Context, from peer.ID, req p2p.BlobRequest, idle time.Duration) (p2p.BlobAnswer, io.ReadCloser, error)
}

// Cluster is what the peer source knows of the other members. Its methods
// may be called concurrently.
type Cluster interface {
	// Admit reports whether p is a peer of the cluster, the only peers
	// trusted to serve, and lets p know this node is one too, so that it
	// serves it. A peer this node has not met yet (a follower of the
	// metadata, named by the DHT or by a busy peer's redirect) may have
	// to prove it first: a round trip, bounded by ctx. A stranger is
	// never admitted.
	Admit(ctx context.Context, p peer.ID) bool
	// Live are the members that can serve copies right now.
	Live() []peer.ID
	// Holders asks peers which of digests they hold complete.
	Holders(ctx context.Context, peers []peer.ID, digests []digest.Digest) map[digest.Digest][]peer.ID
	// Order sorts peers best source first (nearest zone, then region, then
	// least loaded; penalised peers last).
	Order(ctx context.Context, peers []peer.ID)
	// Penalise records that p sent bytes that were not the blob.
	Penalise(p peer.ID, why string)
}

// PeersConfig is what a Peers source is made of.
type PeersConfig struct {
	Net       Network
	Providers ProviderFinder
	Cluster   Cluster
	// Idle is how long a transfer may move no bytes before the next
	// holder is tried.
	Idle time.Duration
	// Lookup observes the time of each provider lookup; nil: not observed.
	Lookup prometheus.Observer
	Log    *slog.Logger
}

// Peers is the Source that fetches from the other members: the peers
// named by the request first, then the holders the DHT and the members
// name, nearest first, resuming after a peer that stops early and
// penalising peers whose bytes fail the digest.
type Peers struct {
	cfg       PeersConfig
	providers *providerCache
}

var _ Source = (*Peers)(nil)

// NewPeers returns the peer source.
func NewPeers(cfg PeersConfig) *Peers {
	return &Peers{cfg: cfg, providers: newProviderCache(cfg.Providers, cfg.Lookup, cfg.Log)}
}

// Name is the source's name in errors.
func (s *Peers) Name() string { return "peers" }

// Fill tries the hinted peers, then looks for holders up to lookupRounds
// times.
func (s *Peers) Fill(ctx context.Context, f *Fetch) error {
	rounds := lookupRounds
	switch {
	case f.Delegated():
		// The member that asked found no holder: go to the origin.
		return ErrNoProvider
	case f.Origin() != nil:
		// A blob with an origin that no peer holds is no race with a
		// commit a moment ago: the origin source coordinates the members
		// fetching it at once.
		rounds = 1
	}
	err := ErrNoProvider
	done := false
	if len(f.hint) > 0 {
		// Peers named by the asker (a replicate request) hold the blob:
		// try them before spending a DHT lookup.
		done, err = s.fetchFrom(ctx, f, f.hint)
	}
	for round := 0; round < rounds && !done; round++ {
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
		done, err = s.fetchFrom(ctx, f, s.candidates(ctx, f.d, f.hint))
	}
	return err
}

// fetchFrom tries candidates in order, following redirects from busy
// peers, until the blob is committed (done) or every candidate failed.
// Bytes from a peer that stops early are kept and the next peer resumes
// after them; bytes that fail the digest are all dropped, and every peer
// that sent some is penalised.
func (s *Peers) fetchFrom(ctx context.Context, f *Fetch, queue []peer.ID) (done bool, err error) {
	err = ErrNoProvider
	self := s.cfg.Net.ID()
	tried := map[peer.ID]bool{self: true}
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
			tried[self] = true
		}
		p := queue[0]
		queue = queue[1:]
		if tried[p] {
			continue
		}
		tried[p] = true
		// Trust is checked here, when a peer is about to be asked, not
		// when the DHT or a redirect names it: a follower of the metadata
		// meets most other followers only through a fetch, and a check up
		// front would drop every one it has not met yet, leaving the
		// members (and so the pusher) to serve them all.
		if !s.cfg.Cluster.Admit(ctx, p) {
			s.providers.drop(f.d, p)
			if errors.Is(err, ErrNoProvider) {
				err = fmt.Errorf("peer %s is not a peer of this cluster", p)
			}
			continue
		}
		part := f.Current()
		written := part.Written()
		req := p2p.BlobRequest{Digest: f.d, Offset: written, NoRedirect: noRedirect,
			// Resuming mid-blob: only a complete copy can continue it
			// without risking a cycle of peers waiting on one another.
			CompleteOnly: written > 0}
		answer, body, ferr := s.cfg.Net.FetchBlob(ctx, p, req, s.cfg.Idle)
		switch {
		case ferr != nil:
			s.providers.drop(f.d, p)
			err = ferr
			continue
		case answer.Status == p2p.BlobBusy:
			busy = append(busy, p)
			var redirect []peer.ID
			for _, r := range answer.Redirect {
				// Admitted (or not) when asked, like every candidate.
				if id, derr := peer.Decode(r); derr == nil && !tried[id] && len(redirect) < maxRedirect {
					redirect = append(redirect, id)
				}
			}
			queue = append(redirect, queue...)
			continue
		case answer.Status != p2p.BlobOK:
			s.providers.drop(f.d, p)
			err = fmt.Errorf("peer %s: %s %s", p, answer.Status, answer.Message)
			continue
		case answer.Size != f.size:
			body.Close()
			if f.sizeGuessed {
				err = fmt.Errorf("peer %s announced %d bytes, the local copy had %d", p, answer.Size, f.size)
				continue
			}
			s.cfg.Cluster.Penalise(p, fmt.Sprintf("announced %d bytes, the blob has %d", answer.Size, f.size))
			continue
		}
		f.SetSource(p, answer.Depth+1)
		sent[p] = true
		_, cerr := io.CopyBuffer(f.Writer(part), body, buf)
		body.Close()
		if cerr != nil || part.Written() < f.size {
			// No source any more: serve no partial bytes until another
			// one is found. With every byte here (being verified and
			// made durable) the node keeps serving them.
			f.SetSource("", 0)
		}
		if cerr != nil {
			err = fmt.Errorf("peer %s: %w", p, cerr)
			if errors.Is(cerr, blobstore.ErrDigestMismatch) { // sent more than the size
				s.cfg.Cluster.Penalise(p, cerr.Error())
			}
			s.cfg.Log.Info("blob fetch from a peer stopped; trying the next", "digest", f.d, "peer", p,
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
		for q := range sent {
			s.cfg.Cluster.Penalise(q, cerr.Error())
		}
		clear(sent)
		if nerr := f.Restart(); nerr != nil {
			return false, nerr
		}
		err = cerr
	}
}

// candidates lists the peers to ask for d: hint first, then the holders,
// best first: the DHT's providers (complete copies and fetches in
// progress) and, in a cluster of at most askAllLimit live members, those
// members that say they hold it.
func (s *Peers) candidates(ctx context.Context, d digest.Digest, hint []peer.ID) []peer.ID {
	// The lookup and the question to the members run side by side: the
	// first byte waits for the slower of the two, not for both.
	asked := make(chan []peer.ID, 1)
	go func() {
		var has []peer.ID
		if live := s.cfg.Cluster.Live(); len(live) <= askAllLimit {
			has = s.cfg.Cluster.Holders(ctx, live, []digest.Digest{d})[d]
		}
		asked <- has
	}()
	found := s.providers.find(ctx, d)
	for _, p := range <-asked {
		if !contains(found, p) {
			found = append(found, p)
		}
	}
	s.cfg.Cluster.Order(ctx, found)
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
