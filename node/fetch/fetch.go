// Package fetch copies a blob to this node's disk once, however many
// clients and peers wait for it: the fetch-once engine. Its bytes go to a
// Partial (blobstore.Partial on disk) that those readers follow while it
// grows. Where the bytes come from is a Source: the other peers (Peers),
// and the blob's origin, an upstream registry (OriginSource: one member
// chosen by rendezvous hashing fetches it, the others cut through behind
// it); every source writes into the same Partial.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

// timeout bounds a whole fetch of one blob.
const timeout = time.Hour

// Source fills a fetch with a blob's bytes.
type Source interface {
	// Name says where the bytes come from, in errors ("peers").
	Name() string
	// Fill writes the blob into f.Current() (through f.Writer) until it
	// commits the Partial (nil), or returns why it could not. It may drop
	// an attempt whose bytes failed the digest with f.Restart.
	Fill(ctx context.Context, f *Fetch) error
}

// Partials makes the partial copies a fetch writes into (the blob store).
type Partials interface {
	NewPartial(d digest.Digest, size int64) (Partial, error)
}

// Partial is one attempt at a blob of known digest and size: one writer
// (the source) while any number of readers follow it. *blobstore.Partial
// is the one on disk; its doc comment holds the full contract.
type Partial interface {
	// Write appends bytes; writing past the size fails with an error
	// wrapping blobstore.ErrDigestMismatch (the sender is not sending this
	// blob).
	Write(b []byte) (int, error)
	// Written is how many bytes the writer stored so far.
	Written() int64
	// Commit checks that every byte arrived and matches the digest, and
	// stores the blob; otherwise the partial fails and the error wraps
	// blobstore.ErrDigestMismatch.
	Commit() error
	// Fail ends the attempt without a blob; readers get
	// blobstore.ErrPartialFailed (wrapping cause). A no-op once ended.
	Fail(cause error)
	// NewReader returns a reader from the first byte that waits for the
	// writer and never sees the last byte before Commit verified it. It
	// reports false once the attempt ended and its last reader is gone
	// (then read the committed blob from the store).
	NewReader() (io.ReadSeekCloser, bool)
}

// Metrics are what the engine counts; nil fields are not counted.
type Metrics struct {
	Seconds prometheus.Observer // time of whole fetches
	Rate    prometheus.Observer // bytes per second of whole fetches
	Bytes   prometheus.Counter  // bytes received
}

// Config is what an Engine is made of.
type Config struct {
	Partials Partials
	// Sources are tried in order until one brings the blob.
	Sources []Source
	// Room refuses a fetch before it starts when this node cannot store
	// the blob (the disk nearly full); nil: never.
	Room func() error
	// Held reports whether this node stores a complete copy of blob d;
	// nil: never. A fetch that may go to an origin (Request.Origin), asked
	// for a blob held already, ends at once without a byte moved: the
	// asker checked its store before asking (or asked another node), but
	// a fetch of the same blob may have committed in between, and the
	// origin would serve the cluster a blob twice. (Other fetches are not
	// checked: one replacing a copy of the wrong size starts before that
	// copy is moved aside.)
	Held func(d digest.Digest) bool
	// Go runs fn on a goroutine its owner waits for on shutdown, under a
	// context that ends then; it returns an error, and does nothing, once
	// the owner began to close.
	Go func(fn func(ctx context.Context)) error
	// Announce tells the other peers, at the start of a fetch, that this
	// node is getting d: those fetching it too then read what it already
	// has (cut-through). Runs on a goroutine of Go; nil: nobody is told.
	Announce func(d digest.Digest)
	Metrics  Metrics
	Log      *slog.Logger
}

// Engine runs the fetches of one node. Its methods are safe for
// concurrent use.
type Engine struct {
	cfg Config

	mu      sync.Mutex
	fetches map[digest.Digest]*Fetch // in progress
}

// New returns an engine; it starts no goroutine until Start.
func New(cfg Config) *Engine {
	return &Engine{cfg: cfg, fetches: map[digest.Digest]*Fetch{}}
}

// Request is a blob to fetch.
type Request struct {
	Digest digest.Digest
	Size   int64
	// SizeGuessed is set when Size is not known from the metadata but
	// taken from a local copy that failed its digest: a source announcing
	// another size is then not penalised, only skipped.
	SizeGuessed bool
	// Hint names peers known to hold the blob (a replicate request), tried
	// before any lookup.
	Hint []peer.ID
	// ForClient is set when a client read waits on the fetch: it then
	// logs as a pull at INFO, otherwise as a copy between nodes at DEBUG.
	ForClient bool
	// Origin is where the blob comes from when no peer holds it (an
	// upstream registry and the repository there); nil: peers only.
	Origin *Origin
	// Delegated is set when another member asked this node to fetch the
	// blob from its origin (it found no peer holding it, and this node is
	// the one rendezvous hashing chose): the peers are not asked again.
	// It also marks a fetch of the blob already in progress.
	Delegated bool
}

// A Fetch is one blob being copied to this node's disk.
type Fetch struct {
	e           *Engine
	d           digest.Digest
	size        int64
	sizeGuessed bool
	hint        []peer.ID

	// forClient is set (under Engine.mu) when a client read waits on the
	// fetch (see Request.ForClient).
	forClient bool
	// origin is where the blob comes from when no peer holds it; set at
	// the start, or (under Engine.mu) by the first request that names one.
	origin *Origin
	// delegated is set (under Engine.mu) when a member asked this node to
	// fetch the blob from its origin (see Request.Delegated).
	delegated bool

	flowing     chan struct{} // closed when the first bytes arrive, or at done
	flowingOnce sync.Once
	done        chan struct{} // closed when the fetch ended
	err         error         // why it failed; read after done

	mu     sync.Mutex
	part   Partial // the attempt in progress
	source peer.ID // where the bytes come from now
	depth  int     // hops from a complete copy; 0: no source yet
}

// Start returns the fetch of req.Digest in progress, or starts one.
func (e *Engine) Start(req Request) (*Fetch, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f := e.fetches[req.Digest]; f != nil {
		f.forClient = f.forClient || req.ForClient
		f.delegated = f.delegated || req.Delegated
		if f.origin == nil && req.Origin != nil {
			o := *req.Origin
			f.origin = &o
		}
		return f, nil
	}
	if req.Origin != nil && e.cfg.Held != nil && e.cfg.Held(req.Digest) {
		f := &Fetch{e: e, d: req.Digest, size: req.Size, flowing: make(chan struct{}), done: make(chan struct{})}
		close(f.flowing)
		close(f.done)
		return f, nil
	}
	if e.cfg.Room != nil {
		if err := e.cfg.Room(); err != nil {
			return nil, err // a fetch writes the blob here
		}
	}
	part, err := e.cfg.Partials.NewPartial(req.Digest, req.Size)
	if err != nil {
		return nil, err
	}
	f := &Fetch{e: e, d: req.Digest, size: req.Size, sizeGuessed: req.SizeGuessed, hint: req.Hint, forClient: req.ForClient,
		delegated: req.Delegated, part: part, flowing: make(chan struct{}), done: make(chan struct{})}
	if req.Origin != nil {
		o := *req.Origin
		f.origin = &o
	}
	if err := e.cfg.Go(func(ctx context.Context) { e.run(ctx, f) }); err != nil {
		part.Fail(err)
		return nil, err
	}
	e.fetches[req.Digest] = f
	return f, nil
}

// InProgress is how many fetches are running.
func (e *Engine) InProgress() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.fetches)
}

// Reader returns a reader of the part of d this node is fetching, with the
// blob's size and this node's depth (hops from a complete copy), when it
// can serve it to peer to: the fetch has a source already, and that source
// is not to (two nodes must not wait on each other). Otherwise r is nil.
func (e *Engine) Reader(d digest.Digest, to peer.ID) (r io.ReadSeekCloser, size int64, depth int) {
	e.mu.Lock()
	f := e.fetches[d]
	e.mu.Unlock()
	if f == nil {
		return nil, 0, 0
	}
	f.mu.Lock()
	part, source, depth := f.part, f.source, f.depth
	f.mu.Unlock()
	if depth == 0 || source == to {
		return nil, 0, 0
	}
	r, ok := part.NewReader()
	if !ok {
		return nil, 0, 0
	}
	return r, f.size, depth
}

// run fills f from the sources until the bytes are verified and committed,
// or no source is left to try.
func (e *Engine) run(ctx context.Context, f *Fetch) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	if e.cfg.Announce != nil {
		_ = e.cfg.Go(func(context.Context) { e.cfg.Announce(f.d) })
	}
	err := ErrNoProvider
	names := make([]string, 0, len(e.cfg.Sources))
	for _, s := range e.cfg.Sources {
		serr := s.Fill(ctx, f)
		if errors.Is(serr, ErrNoOrigin) {
			continue // not a source of this blob: the error stays the last real one
		}
		names = append(names, s.Name())
		if err = serr; err == nil || ctx.Err() != nil {
			break
		}
	}
	e.mu.Lock()
	delete(e.fetches, f.d)
	forClient := f.forClient
	e.mu.Unlock()
	log := e.cfg.Log
	if err != nil {
		f.Current().Fail(err)
		f.err = fmt.Errorf("fetching blob %s (%d bytes) from %s: %w", f.d, f.size, strings.Join(names, ", "), err)
		log.Warn("blob fetch failed", "digest", f.d, "size", f.size, "for_client", forClient, "err", err)
	} else {
		took := time.Since(start)
		if m := e.cfg.Metrics.Seconds; m != nil {
			m.Observe(took.Seconds())
		}
		if m := e.cfg.Metrics.Rate; m != nil {
			m.Observe(float64(f.size) / max(took.Seconds(), 1e-6))
		}
		f.mu.Lock()
		source := f.source
		f.mu.Unlock()
		// A pull a client waited for is news for the operator; a copy
		// between nodes (for --replicas, or replacing a corrupt copy) is
		// routine: the repair sweep and the corruption report say so at
		// INFO, each copy only at DEBUG.
		if forClient {
			log.Info("fetched blob", "digest", f.d, "size", f.size, "peer", source, "took", took.Round(time.Millisecond))
		} else {
			log.Debug("replica copy", "peer", source, "digest", f.d, "bytes", f.size, "took", took.Round(time.Millisecond))
		}
	}
	f.markFlowing()
	close(f.done)
}

// Digest is the blob being fetched.
func (f *Fetch) Digest() digest.Digest { return f.d }

// Size is the blob's size (see SizeGuessed).
func (f *Fetch) Size() int64 { return f.size }

// SizeGuessed reports whether Size may be wrong (see Request.SizeGuessed).
func (f *Fetch) SizeGuessed() bool { return f.sizeGuessed }

// Hint is the peers the request named (see Request.Hint).
func (f *Fetch) Hint() []peer.ID { return f.hint }

// Origin is where the blob comes from when no peer holds it (see
// Request.Origin); nil: peers only.
func (f *Fetch) Origin() *Origin {
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	return f.origin
}

// Delegated reports whether another member asked this node to fetch the
// blob from its origin (see Request.Delegated).
func (f *Fetch) Delegated() bool {
	f.e.mu.Lock()
	defer f.e.mu.Unlock()
	return f.delegated
}

// Done is closed when the fetch ended; Err then says how.
func (f *Fetch) Done() <-chan struct{} { return f.done }

// Flowing is closed when the first bytes arrived, or when the fetch ended.
func (f *Fetch) Flowing() <-chan struct{} { return f.flowing }

// Err is why the fetch failed, nil if the blob is committed. Read it only
// after Done is closed.
func (f *Fetch) Err() error { return f.err }

// Current is the attempt in progress: the Partial readers follow.
func (f *Fetch) Current() Partial {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.part
}

// SetSource records where the bytes come from now, and how many hops that
// is from a complete copy; ("", 0) while there is none, when this node
// serves no partial bytes of the blob.
func (f *Fetch) SetSource(p peer.ID, depth int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.source, f.depth = p, depth
}

// Restart drops the current attempt (its bytes failed the digest) and
// begins a new, empty one.
func (f *Fetch) Restart() error {
	next, err := f.e.cfg.Partials.NewPartial(f.d, f.size)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.part = next
	f.mu.Unlock()
	return nil
}

// Writer writes fetched bytes into part (the attempt from Current) and
// counts them.
func (f *Fetch) Writer(part Partial) io.Writer {
	return &writer{f: f, part: part, count: f.e.cfg.Metrics.Bytes}
}

func (f *Fetch) markFlowing() { f.flowingOnce.Do(func() { close(f.flowing) }) }

type writer struct {
	f     *Fetch
	part  Partial
	count prometheus.Counter // nil: not counted
}

func (w *writer) Write(b []byte) (int, error) {
	m, err := w.part.Write(b)
	if w.count != nil {
		w.count.Add(float64(m))
	}
	if m > 0 {
		w.f.markFlowing()
	}
	return m, err
}
