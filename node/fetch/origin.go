package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/blobstore"
)

// Origin names where a blob comes from when no peer holds it: a configured
// upstream and the repository there.
type Origin struct{ Name, Repo string }

// OriginFunc streams a blob from an origin from offset (h/mirror implements
// it with node/upstream's Registry.Blob).
type OriginFunc func(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error)

// Origins looks an origin up by name; h/mirror implements it (node/mirror),
// node wires it into the engine.
type Origins interface {
	Origin(name string) (OriginFunc, bool)
}

// RegionalOrigins is an Origins that says, per origin, whether one member
// per region fetches from it (rather than one per cluster). An Origins
// without this method follows the node's setting.
type RegionalOrigins interface {
	Origins
	FetchPerRegion(name string) bool
}

// ErrNoOrigin is the origin source's failure for a fetch without an origin
// (peers only).
var ErrNoOrigin = errors.New("no origin to fetch it from")

// Limits on an origin fetch asked for by another member (OriginRequest):
// a member names an origin and a repository, never a URL, and these bound
// what it may make this node do.
const (
	// MaxOriginBlobSize bounds the size of a blob fetched from an origin
	// for another member.
	MaxOriginBlobSize = 1 << 40
	// maxOriginName bounds an origin's name (a registry host).
	maxOriginName = 255
	// maxOriginRepo bounds a repository name, as the API does.
	maxOriginRepo = 255
)

// repoRE is the OCI distribution spec's repository name grammar.
var repoRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)

// OriginRequest is what a member asks the member rendezvous hashing chose:
// fetch blob Digest of Size bytes from origin Origin, repository Repo, and
// serve it to the peers as it arrives.
type OriginRequest struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	Origin string        `json:"origin"`
	Repo   string        `json:"repo"`
}

// Validate checks a request from another member against the limits and
// the origins this node knows: an unknown origin name, a bad digest or
// repository name, or a size out of bounds is refused before any fetch.
func (r OriginRequest) Validate(origins Origins) error {
	switch {
	case r.Digest.Validate() != nil:
		return fmt.Errorf("invalid digest %.80q", r.Digest)
	case r.Size <= 0 || r.Size > MaxOriginBlobSize:
		return fmt.Errorf("blob size %d out of bounds (1 to %d bytes)", r.Size, int64(MaxOriginBlobSize))
	case len(r.Repo) == 0 || len(r.Repo) > maxOriginRepo || !repoRE.MatchString(r.Repo):
		return fmt.Errorf("invalid repository name %.80q", r.Repo)
	case len(r.Origin) == 0 || len(r.Origin) > maxOriginName:
		return fmt.Errorf("invalid origin name %.80q", r.Origin)
	}
	if origins == nil {
		return fmt.Errorf("origin %q is not configured on this node (no upstreams)", r.Origin)
	}
	if _, ok := origins.Origin(r.Origin); !ok {
		return fmt.Errorf("origin %q is not configured on this node", r.Origin)
	}
	return nil
}

// Choose returns the member that fetches blob d from its origin among
// members: rendezvous (highest random weight) hashing, the member with the
// highest hash of (d, member) wins. Every node with the same list chooses
// the same member, and when a member leaves only the blobs it had won move
// (to their second choice). "" when members is empty.
func Choose(d digest.Digest, members []peer.ID) peer.ID {
	var best peer.ID
	var bestScore uint64
	for _, p := range members {
		s := rendezvousScore(d, p)
		if best == "" || s > bestScore || (s == bestScore && p > best) {
			best, bestScore = p, s
		}
	}
	return best
}

func rendezvousScore(d digest.Digest, p peer.ID) uint64 {
	h := sha256.New()
	h.Write([]byte(d))
	h.Write([]byte{0})
	h.Write([]byte(p))
	return binary.BigEndian.Uint64(h.Sum(nil)[:8])
}

// Delegator asks another member to fetch a blob from its origin.
type Delegator interface {
	// Delegate asks to to fetch req; nil when it started (or joined) the
	// fetch and serves its bytes to peers as they arrive.
	Delegate(ctx context.Context, to peer.ID, req OriginRequest) error
}

// OriginMetrics are what the origin source counts; nil fields are not
// counted.
type OriginMetrics struct {
	Blobs     prometheus.Counter // blobs this node fetched from origins
	Bytes     prometheus.Counter // bytes this node received from origins
	Delegated prometheus.Counter // fetches another member made for this node
	Fallbacks prometheus.Counter // fetches this node made itself after the chosen member failed
}

// OriginConfig is what an OriginSource is made of.
type OriginConfig struct {
	// Self is this node.
	Self peer.ID
	// Origins are the origins this node knows; nil: none.
	Origins Origins
	// Fetchers lists the members that may fetch from origin name now: this
	// node and the live members (of this node's region when one member
	// per region fetches from it). Called concurrently.
	Fetchers func(name string) []peer.ID
	// Delegator asks the chosen member.
	Delegator Delegator
	// Peers is the peer source, through which this node cuts through
	// behind the chosen member.
	Peers *Peers
	// Idle is how long an origin stream may move no bytes before it is
	// dropped and asked again from where it stopped.
	Idle time.Duration
	// DelegateTimeout bounds the question to the chosen member (it
	// answers once the first bytes arrive from the origin).
	DelegateTimeout time.Duration
	Metrics         OriginMetrics
	Log             *slog.Logger
}

const (
	// maxOriginAttempts bounds the calls to the origin for one blob.
	maxOriginAttempts = 8
	// maxStalledAttempts bounds the calls in a row that brought no byte.
	maxStalledAttempts = 3
	// originRetryPause is the pause before the n-th call is n times this.
	originRetryPause = 200 * time.Millisecond
)

// OriginSource is the Source of last resort for a blob with an origin: one
// member, chosen by rendezvous hashing of the digest over the live
// members, fetches it from the origin; the others ask that member to start
// (OriginRequest) and stream from it, through the cut-through path, as its
// bytes arrive. When the chosen member cannot be asked, refuses or fails,
// this node fetches from the origin itself, resuming after the bytes it
// has. A broken origin stream is asked again from the offset reached.
type OriginSource struct{ cfg OriginConfig }

var _ Source = (*OriginSource)(nil)

// NewOriginSource returns the origin source.
func NewOriginSource(cfg OriginConfig) *OriginSource {
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Second
	}
	if cfg.DelegateTimeout <= 0 {
		cfg.DelegateTimeout = 20 * time.Second
	}
	return &OriginSource{cfg: cfg}
}

// Name is the source's name in errors.
func (s *OriginSource) Name() string { return "origin" }

// Chosen is the member that fetches d from origin name now.
func (s *OriginSource) Chosen(d digest.Digest, name string) peer.ID {
	return Choose(d, s.cfg.Fetchers(name))
}

// Fill fetches f's blob from its origin, here or behind the chosen member.
func (s *OriginSource) Fill(ctx context.Context, f *Fetch) error {
	o, delegated := f.Origin(), f.Delegated()
	if o == nil {
		return ErrNoOrigin
	}
	var fn OriginFunc
	ok := false
	if s.cfg.Origins != nil {
		fn, ok = s.cfg.Origins.Origin(o.Name)
	}
	if !ok {
		return fmt.Errorf("origin %q is not configured on this node", o.Name)
	}
	log := s.cfg.Log.With("digest", f.d, "origin", o.Name, "repo", o.Repo)
	if !delegated {
		if chosen := s.Chosen(f.d, o.Name); chosen != "" && chosen != s.cfg.Self {
			err := s.behind(ctx, f, chosen, o)
			if err == nil {
				return nil
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			inc(s.cfg.Metrics.Fallbacks)
			log.Warn("fetching the blob from its origin here: the member chosen to fetch it did not bring it",
				"chosen", chosen, "have", f.Current().Written(), "size", f.size, "err", err)
		}
	}
	return s.fromOrigin(ctx, f, fn, o, log)
}

// behind asks chosen to fetch f's blob from o and streams it from chosen.
func (s *OriginSource) behind(ctx context.Context, f *Fetch, chosen peer.ID, o *Origin) error {
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DelegateTimeout)
	err := s.cfg.Delegator.Delegate(dctx, chosen, OriginRequest{Digest: f.d, Size: f.size, Origin: o.Name, Repo: o.Repo})
	cancel()
	if err != nil {
		return fmt.Errorf("asking %s to fetch it: %w", chosen, err)
	}
	inc(s.cfg.Metrics.Delegated)
	done, err := s.cfg.Peers.fetchFrom(ctx, f, []peer.ID{chosen})
	if done {
		return nil
	}
	return fmt.Errorf("streaming it from %s: %w", chosen, err)
}

// fromOrigin fetches f's blob from the origin into the current attempt,
// resuming after the bytes it has, and serves the bytes to peers as they
// arrive.
func (s *OriginSource) fromOrigin(ctx context.Context, f *Fetch, fn OriginFunc, o *Origin, log *slog.Logger) error {
	part := f.Current()
	// A complete copy one hop away: the peers that cut through behind
	// this node read what it has so far (see Engine.Reader).
	f.SetSource(s.cfg.Self, 1)
	defer func() {
		if part.Written() < f.size {
			f.SetSource("", 0)
		}
	}()
	w := &writer{f: f, part: part, count: s.cfg.Metrics.Bytes}
	buf := make([]byte, 1<<20)
	var err error
	stalled := 0
	for attempt := 0; attempt < maxOriginAttempts && stalled < maxStalledAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt) * originRetryPause):
			}
		}
		offset := part.Written()
		var n int64
		n, err = s.stream(ctx, fn, o, f, offset, w, buf)
		if n == 0 {
			stalled++
		} else {
			stalled = 0
		}
		if err != nil {
			if errors.Is(err, blobstore.ErrDigestMismatch) {
				return fmt.Errorf("origin %s sent more than %d bytes: %w", o.Name, f.size, err)
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			log.Info("origin stream broke; asking again from where it stopped", "offset", part.Written(), "size", f.size, "err", err)
			continue
		}
		if part.Written() < f.size {
			err = fmt.Errorf("origin stream ended at %d of %d bytes", part.Written(), f.size)
			log.Info("origin stream ended early; asking again from where it stopped", "offset", part.Written(), "size", f.size)
			continue
		}
		if err := part.Commit(); err != nil {
			return fmt.Errorf("origin %s repository %s: %w", o.Name, o.Repo, err)
		}
		inc(s.cfg.Metrics.Blobs)
		log.Info("fetched blob from its origin", "size", f.size, "calls", attempt+1)
		return nil
	}
	return fmt.Errorf("origin %s repository %s: %d calls, the last: %w", o.Name, o.Repo, maxOriginAttempts, err)
}

// stream makes one call to the origin from offset and copies what it sends
// into w, dropping a stream that moves no bytes for Idle. n is the bytes
// copied.
func (s *OriginSource) stream(ctx context.Context, fn OriginFunc, o *Origin, f *Fetch, offset int64, w io.Writer, buf []byte) (int64, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	body, err := fn(ctx, o.Repo, f.d, f.size, offset)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	var moved atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	wg.Go(func() {
		t := time.NewTicker(s.cfg.Idle)
		defer t.Stop()
		var last int64
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if now := moved.Load(); now != last {
					last = now
					continue
				}
				cancel(fmt.Errorf("origin stream moved no bytes for %s", s.cfg.Idle))
				_ = body.Close()
				return
			}
		}
	})
	n, err := io.CopyBuffer(w, &countingReader{r: body, n: &moved}, buf)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return n, err
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	m, err := c.r.Read(p)
	c.n.Add(int64(m))
	return m, err
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}
