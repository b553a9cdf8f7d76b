package replicate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// Eviction keeps the bytes of the blobs on this node's disk under a budget
// (--max-disk). Once they pass it, the evictor deletes the least recently
// read blobs down to a low-water mark, each only when at least Replicas
// OTHER live members hold it, so that the cluster keeps --replicas copies
// and never loses a last one:
//
//   - the holders are asked right before the decision (records and the DHT
//     can be stale), with HasRequest.Hold: a peer that says it holds the
//     blob keeps it for HoldFor, and the evictor deletes only within half
//     of that, so two nodes evicting the same blob at once cannot each
//     count on the other's copy;
//   - a blob in use here (read by a client or a peer, uploaded and not
//     linked yet: the Pins) is never evicted, and the delete happens under
//     the pins' lock (Pins.UnlessPinned), as garbage collection's does;
//   - a blob too few others hold (this node took one of its --replicas
//     copies at push time) is handed off: the evictor asks a live member
//     that lacks it to copy it (ReplicateProtocol), then asks again and
//     evicts it. A member over its own budget refuses such a copy.
//
// A pass that cannot get under the budget leaves a reason (Stuck) that
// the node's disk guard turns into a refusal of new blob writes.
//
// An evicted blob is no longer held: has and blob requests answer "not
// held" and the reprovider stops renewing its DHT record, as for a blob
// garbage collection freed.

// EvictFiles are the blob files on this node's disk (blobstore.Store).
type EvictFiles interface {
	Walk(fn func(d digest.Digest, size int64) bool) error
	Delete(d digest.Digest) error
}

// EvictConfig configures NewEvictor.
type EvictConfig struct {
	// Budget is the most blob bytes this node keeps; a pass evicts down
	// to Low (0 < Low <= Budget).
	Budget, Low int64
	// Used is how many blob bytes this node holds now (cheap: it is read
	// every Every).
	Used  func() int64
	Files EvictFiles
	// LastRead is when d was last read here (or arrived, if later).
	LastRead func(d digest.Digest) time.Time
	// Refetchable, if not nil, reports whether d can come back from an
	// upstream (mirrored content): it may then go while one other live
	// member holds it, not Replicas. Never the last copy.
	Refetchable func(d digest.Digest) bool
	// Every is how often Run compares Used with Budget; a pass that got
	// stuck is retried every RetryStuck (Kick does not hurry it).
	Every, RetryStuck time.Duration
	// OnEvicted, if not nil, hears of each blob evicted (metrics, the
	// recency index); OnHandedOff of each copy made elsewhere first.
	OnEvicted   func(d digest.Digest, size int64)
	OnHandedOff func(d digest.Digest)
	// OnStuck, if not nil, hears of each pass that ended over the budget.
	OnStuck func()
	Log     *slog.Logger
}

// maxHandOffs bounds the blobs one pass tries to hand off to other members.
const maxHandOffs = 32

// evictBatch is how many candidates one has request asks about.
const evictBatch = 32

// Evictor keeps this node's blob bytes under a budget (see above). Run
// owns its goroutine; Pass may be called directly (tests). Safe for
// concurrent use.
type Evictor struct {
	r    *Replicator
	cfg  EvictConfig
	kick chan struct{}

	pass sync.Mutex // one pass at a time

	mu    sync.Mutex
	stuck string // why the last pass ended over the budget ("": it did not)
}

// NewEvictor returns the evictor of r's node. It needs r's Pins.
func NewEvictor(r *Replicator, cfg EvictConfig) (*Evictor, error) {
	switch {
	case r.cfg.Pins == nil:
		return nil, errors.New("replicate: eviction needs the pins of the blobs in use")
	case cfg.Budget <= 0 || cfg.Low <= 0 || cfg.Low > cfg.Budget:
		return nil, fmt.Errorf("replicate: eviction needs 0 < low-water mark (%d) <= budget (%d)", cfg.Low, cfg.Budget)
	}
	if cfg.Every <= 0 {
		cfg.Every = time.Second
	}
	if cfg.RetryStuck <= 0 {
		cfg.RetryStuck = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Evictor{r: r, cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

// Budget and Low are the evictor's limits.
func (e *Evictor) Budget() int64 { return e.cfg.Budget }
func (e *Evictor) Low() int64    { return e.cfg.Low }

// Kick asks for a pass now (a write or fetch found the node over its
// budget). It never blocks.
func (e *Evictor) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Stuck says why the node is at or over its budget with nothing it can
// evict, or "" when it is under the budget or a pass may yet free space.
func (e *Evictor) Stuck() string {
	if e.cfg.Used() < e.cfg.Budget {
		return ""
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stuck
}

// Run makes a pass whenever the node is over its budget, checked every
// Every and on Kick, until ctx ends; it then returns nil. After a pass
// that could not get under the budget it waits RetryStuck.
func (e *Evictor) Run(ctx context.Context) error {
	t := time.NewTicker(e.cfg.Every)
	defer t.Stop()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-e.kick:
		}
		if e.cfg.Used() <= e.cfg.Budget {
			e.setStuck("")
			continue
		}
		if e.stuckNow() && time.Since(last) < e.cfg.RetryStuck {
			continue
		}
		last = time.Now()
		if _, err := e.Pass(ctx); err != nil && ctx.Err() == nil {
			e.cfg.Log.Warn("eviction pass failed; retrying later", "err", err)
		}
	}
}

func (e *Evictor) stuckNow() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stuck != ""
}

func (e *Evictor) setStuck(why string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stuck = why
}

// PassResult is what one pass did.
type PassResult struct {
	Evicted   int
	Bytes     int64
	HandedOff int
	// Stuck is why the pass ended over the budget ("": it did not).
	Stuck string
}

type candidate struct {
	Ref
	read time.Time
}

// Pass evicts least recently read blobs until the node holds at most Low
// bytes, when it holds more than Budget; see the top of this file.
func (e *Evictor) Pass(ctx context.Context) (PassResult, error) {
	e.pass.Lock()
	defer e.pass.Unlock()
	var res PassResult
	if e.cfg.Used() <= e.cfg.Budget {
		e.setStuck("")
		return res, nil
	}
	var cands []candidate
	if err := e.cfg.Files.Walk(func(d digest.Digest, size int64) bool {
		cands = append(cands, candidate{Ref: Ref{Digest: d, Size: size}, read: e.cfg.LastRead(d)})
		return ctx.Err() == nil
	}); err != nil {
		return res, fmt.Errorf("replicate: listing blobs to evict: %w", err)
	}
	// Least recently read first; the digest breaks ties so a pass is
	// repeatable.
	slices.SortFunc(cands, func(a, b candidate) int {
		return cmp.Or(a.read.Compare(b.read), cmp.Compare(a.Digest, b.Digest))
	})
	var (
		short    []Ref // held by too few others
		inUse    int
		copyErrs []error
	)
	done := func() bool { return e.cfg.Used() <= e.cfg.Low || ctx.Err() != nil }
	for batch := range slices.Chunk(cands, evictBatch) {
		if done() {
			break
		}
		refs := make([]Ref, len(batch))
		for i, c := range batch {
			refs[i] = c.Ref
		}
		few, pinned := e.evictHeld(ctx, refs, &res, done)
		short = append(short, few...)
		inUse += pinned
	}
	// Hand off the least recently read of those too few others hold (at
	// most maxHandOffs tries a pass: the others may be full too).
	for i, ref := range short {
		if done() || i >= maxHandOffs || len(e.r.cfg.Cluster.Live()) == 0 {
			break
		}
		if err := e.handOff(ctx, ref); err != nil {
			copyErrs = append(copyErrs, err)
			continue
		}
		res.HandedOff++
		if e.cfg.OnHandedOff != nil {
			e.cfg.OnHandedOff(ref.Digest)
		}
		_, pinned := e.evictHeld(ctx, []Ref{ref}, &res, done)
		inUse += pinned
	}
	if used := e.cfg.Used(); used > e.cfg.Budget && ctx.Err() == nil {
		res.Stuck = e.stuckReason(len(cands), len(short)-res.HandedOff, inUse, copyErrs)
		if e.cfg.OnStuck != nil {
			e.cfg.OnStuck()
		}
		e.cfg.Log.Warn("over the disk budget and nothing more can be evicted: new blobs are refused until space frees up",
			"used", used, "budget", e.cfg.Budget, "why", res.Stuck)
	}
	e.setStuck(res.Stuck)
	if res.Evicted > 0 {
		e.cfg.Log.Info("evicted blobs to stay under the disk budget", "blobs", res.Evicted, "bytes", res.Bytes,
			"handed_off", res.HandedOff, "used", e.cfg.Used(), "budget", e.cfg.Budget, "low", e.cfg.Low)
	}
	return res, ctx.Err()
}

// evictHeld asks the live members which of refs they hold (Hold), then
// evicts, in order, each that Replicas of them hold, until done (adding
// to res). It returns those too few others hold and how many were in use.
func (e *Evictor) evictHeld(ctx context.Context, refs []Ref, res *PassResult, done func() bool) (short []Ref, inUse int) {
	live := e.r.cfg.Cluster.Live()
	digests := make([]digest.Digest, len(refs))
	for i, ref := range refs {
		digests[i] = ref.Digest
	}
	asked := time.Now()
	var has map[digest.Digest][]peer.ID
	if len(live) > 0 {
		has = e.r.holders(ctx, live, digests, true)
	}
	for _, ref := range refs {
		if done() {
			break
		}
		if len(has[ref.Digest]) < e.needed(ref.Digest) {
			short = append(short, ref)
			continue
		}
		if time.Since(asked) >= HoldFor/2 {
			// The holders' promise may lapse before the delete: leave the
			// rest to the next batch or pass.
			break
		}
		var err error
		if !e.r.cfg.Pins.UnlessPinned(ref.Digest, func() { err = e.cfg.Files.Delete(ref.Digest) }) {
			inUse++
			continue
		}
		if err != nil {
			e.cfg.Log.Warn("evicting a blob failed", "digest", ref.Digest, "err", err)
			continue
		}
		res.Evicted++
		res.Bytes += ref.Size
		if e.cfg.OnEvicted != nil {
			e.cfg.OnEvicted(ref.Digest, ref.Size)
		}
		e.cfg.Log.Debug("evicted a blob", "digest", ref.Digest, "bytes", ref.Size, "holders", len(has[ref.Digest]))
	}
	return short, inUse
}

// needed is how many other live members must hold d before it may go.
func (e *Evictor) needed(d digest.Digest) int {
	if e.cfg.Refetchable != nil && e.cfg.Refetchable(d) {
		return 1
	}
	return e.r.cfg.Replicas
}

// handOff asks live members that lack ref to copy it until as many of
// them hold it as needed.
func (e *Evictor) handOff(ctx context.Context, ref Ref) error {
	live := e.r.cfg.Cluster.Live()
	need := e.needed(ref.Digest)
	if len(live) < need {
		return fmt.Errorf("only %d other live nodes, %d needed", len(live), need)
	}
	held := e.r.Holders(ctx, live, []digest.Digest{ref.Digest})[ref.Digest]
	from := []string{e.r.cfg.Net.ID().String()}
	for _, p := range held {
		from = append(from, p.String())
	}
	var lacking []peer.ID
	for _, p := range live {
		if !slices.Contains(held, p) {
			lacking = append(lacking, p)
		}
	}
	e.r.cfg.Cluster.SpreadFirst(lacking)
	var errs []error
	for _, p := range lacking {
		if len(held) >= need {
			break
		}
		if err := e.r.askCopy(ctx, p, ref, from); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: %w", p, err))
			continue
		}
		e.r.copied()
		held = append(held, p)
	}
	if len(held) < need {
		return fmt.Errorf("blob %s: %d other nodes hold it, %d needed: %w", ref.Digest, len(held), need, errors.Join(errs...))
	}
	return nil
}

// stuckReason says why a pass could not get under the budget.
func (e *Evictor) stuckReason(held, short, inUse int, copyErrs []error) string {
	var why []string
	if n := len(e.r.cfg.Cluster.Live()); n < e.r.cfg.Replicas {
		why = append(why, fmt.Sprintf("only %d other live nodes, and a blob is evicted only while --replicas (%d) others hold it", n, e.r.cfg.Replicas))
	} else if short > 0 {
		w := fmt.Sprintf("%d blobs are held by fewer than --replicas (%d) other live nodes", short, e.r.cfg.Replicas)
		if len(copyErrs) > 0 {
			w += fmt.Sprintf(" and could not be copied to another (%v)", copyErrs[0])
		}
		why = append(why, w)
	}
	if inUse > 0 {
		why = append(why, fmt.Sprintf("%d blobs are in use (being read or uploaded)", inUse))
	}
	if len(why) == 0 {
		why = append(why, fmt.Sprintf("the %d blobs held are all needed", held))
	}
	return strings.Join(why, "; ")
}
