// Package gc is meshreg's online, cluster-wide garbage collection.
//
// A collection has two halves (see consensus/state/gc.go for the state's
// side, which makes it safe against pushes in flight):
//
//   - MarkAndSweep, on one node: it reads the metadata at one applied index
//     (a View), computes the blobs linked to repositories that no manifest
//     references and that were not linked within the grace period, and
//     proposes them through Raft in bounded OpGCSweep batches. Applying a
//     batch re-checks each blob against the state at apply time, unlinks
//     the rest and tombstones them, the same on every node.
//   - Sweeper, on every node: it deletes its own files of the tombstoned
//     blobs (off the apply path), then the files on its disk that nothing
//     links or references (leftovers), keeping files written since the
//     collection began and files in use (Pins).
//
// Any node may coordinate a collection: safety never depends on who marks
// or when, only on the deterministic re-check at apply time. The node
// serializes its own runs and the leader runs the schedule.
package gc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/consensus/state"
)

// View is the metadata pinned at one applied index (state.View).
type View interface {
	Index() uint64
	Manifests(fn func(state.ManifestRef) error) error
	BlobLinks(fn func(state.BlobLinkRef) error) error
	Touched(d digest.Digest) (index uint64, at int64, err error)
}

var _ View = (*state.View)(nil)

// Meta is the metadata a collection reads and writes (consensus.Store).
type Meta interface {
	// View runs fn on the state pinned at one applied index.
	View(fn func(v *state.View) error) error
	// GCSweep commits one batch of the decision (state.OpGCSweep).
	GCSweep(ctx context.Context, markIndex uint64, start, cutoff int64, blobs []state.SweepBlob) error
}

// Candidate is a blob a collection would free: every repository that links
// it, and its size as linked.
type Candidate struct {
	Digest digest.Digest
	Repos  []string
	Size   int64
}

// Plan is what a mark found.
type Plan struct {
	// MarkIndex is the applied index the mark read the state at.
	MarkIndex uint64
	// Start is when the collection began; Cutoff is Start minus the grace:
	// blobs linked at or after it stay.
	Start, Cutoff time.Time
	// Manifests and Links are what the mark read; Blobs what it would free.
	Manifests, Links int
	Blobs            []Candidate
	Bytes            int64
	// Kept counts unreferenced blobs kept: inside the grace, linked in a
	// repository holding a manifest whose body could not be parsed, or
	// linked to more repositories than one sweep may unlink.
	Kept int
}

// Mark computes the blobs to free from v: the digests linked to
// repositories that no manifest references (its config and layers, the
// manifests of an index, its subject, the manifest itself all count) and
// whose latest link is older than cutoff. Every manifest in the state is
// live (a deleted one is gone from it; an untagged one stays). A manifest
// whose body cannot be parsed keeps every blob linked in its repository.
// Memory grows with the distinct digests linked and referenced.
func Mark(v View, start, cutoff time.Time) (Plan, error) {
	p := Plan{MarkIndex: v.Index(), Start: start, Cutoff: cutoff}
	live := map[digest.Digest]struct{}{}
	unknown := map[string]bool{} // repositories with an unparsable manifest
	err := v.Manifests(func(m state.ManifestRef) error {
		p.Manifests++
		live[m.Digest] = struct{}{}
		if m.Subject != "" {
			live[m.Subject] = struct{}{}
		}
		if m.BodyErr != nil {
			unknown[m.Repo] = true
		}
		for _, d := range m.Blobs {
			live[d] = struct{}{}
		}
		for _, d := range m.Children {
			live[d] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("gc: marking manifests at index %d: %w", p.MarkIndex, err)
	}
	cands := map[digest.Digest]*Candidate{}
	err = v.BlobLinks(func(l state.BlobLinkRef) error {
		p.Links++
		if _, ok := live[l.Digest]; ok {
			return nil
		}
		c := cands[l.Digest]
		if c == nil {
			c = &Candidate{Digest: l.Digest, Size: l.Size}
			cands[l.Digest] = c
		}
		c.Repos = append(c.Repos, l.Repo) // links come by repository, in byte order
		return nil
	})
	if err != nil {
		return p, fmt.Errorf("gc: marking blob links at index %d: %w", p.MarkIndex, err)
	}
	for d, c := range cands {
		_, at, err := v.Touched(d)
		if err != nil {
			return p, fmt.Errorf("gc: reading when %s was linked: %w", d, err)
		}
		if at >= cutoff.UnixNano() || len(c.Repos) > state.MaxSweepLinks || slices.ContainsFunc(c.Repos, func(r string) bool { return unknown[r] }) {
			p.Kept++
			continue
		}
		slices.Sort(c.Repos)
		p.Blobs = append(p.Blobs, *c)
		p.Bytes += c.Size
	}
	slices.SortFunc(p.Blobs, func(a, b Candidate) int { return compare(a.Digest, b.Digest) })
	return p, nil
}

func compare(a, b digest.Digest) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Batches splits sorted candidates into sweeps within the bounds of one
// OpGCSweep (state.MaxSweepBlobs blobs, state.MaxSweepLinks links); a
// blob's links never span two batches.
func Batches(blobs []Candidate) [][]state.SweepBlob {
	var out [][]state.SweepBlob
	var cur []state.SweepBlob
	links := 0
	for _, c := range blobs {
		if len(cur) == state.MaxSweepBlobs || links+len(c.Repos) > state.MaxSweepLinks {
			out, cur, links = append(out, cur), nil, 0
		}
		cur = append(cur, state.SweepBlob{Digest: c.Digest, Repos: c.Repos})
		links += len(c.Repos)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// Options tune one collection.
type Options struct {
	// Grace keeps blobs linked less than this long before the mark.
	Grace time.Duration
	// DryRun marks and reports without proposing anything.
	DryRun bool
	// Now is the clock (time.Now if nil).
	Now func() time.Time
	// Progress, if not nil, hears of each step.
	Progress func(msg string)
}

// ErrNoView: the metadata store cannot give a pinned view.
var ErrNoView = errors.New("gc: the metadata store gives no view")

// MarkAndSweep marks at one applied index of meta and, unless DryRun,
// proposes the decision in batches. The caller makes meta's state current
// first (a Raft barrier or a catch-up with the leader): a mark on stale
// state is still safe (the apply re-checks), it only frees less. It
// returns the plan; a batch that failed to commit ends the run with the
// error (the batches before it were applied).
func MarkAndSweep(ctx context.Context, meta Meta, opts Options) (Plan, error) {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	progress := func(string) {}
	if opts.Progress != nil {
		progress = opts.Progress
	}
	start := now()
	var plan Plan
	err := meta.View(func(v *state.View) (err error) {
		plan, err = Mark(v, start, start.Add(-opts.Grace))
		return err
	})
	if err != nil {
		return plan, err
	}
	progress(fmt.Sprintf("marked at index %d: %d manifests, %d blob links; %d blobs (%d bytes) unreferenced, %d kept (grace %s)",
		plan.MarkIndex, plan.Manifests, plan.Links, len(plan.Blobs), plan.Bytes, plan.Kept, opts.Grace))
	if opts.DryRun || len(plan.Blobs) == 0 {
		return plan, nil
	}
	batches := Batches(plan.Blobs)
	for i, b := range batches {
		if err := meta.GCSweep(ctx, plan.MarkIndex, plan.Start.UnixNano(), plan.Cutoff.UnixNano(), b); err != nil {
			return plan, fmt.Errorf("gc: committing sweep batch %d of %d: %w", i+1, len(batches), err)
		}
		progress(fmt.Sprintf("committed sweep batch %d of %d (%d blobs)", i+1, len(batches), len(b)))
	}
	return plan, nil
}
