package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/consensus/state"
)

// Files are the blob files on this node's disk (blobstore.Store).
type Files interface {
	Walk(fn func(d digest.Digest, size int64) bool) error
	Stat(d digest.Digest) (int64, error)
	ModTime(d digest.Digest) (time.Time, error)
	Delete(d digest.Digest) error
}

// SweepMeta is what the sweeper reads of the local metadata
// (consensus.Store).
type SweepMeta interface {
	Tombstones(after uint64, n int) ([]state.Tombstone, error)
	BlobGC(d digest.Digest) (touched, tomb uint64, err error)
	View(fn func(v *state.View) error) error
}

// Report is what one node freed for one collection (by its mark index).
type Report struct {
	MarkIndex uint64 `json:"markIndex"`
	// Blobs and Bytes were freed from tombstones; Leftover* from files
	// nothing linked or referenced.
	Blobs         int   `json:"blobs"`
	Bytes         int64 `json:"bytes"`
	LeftoverBlobs int   `json:"leftoverBlobs"`
	LeftoverBytes int64 `json:"leftoverBytes"`
	// Kept counts collected blobs whose file stayed: in use, written since
	// the collection began, or linked again.
	Kept int `json:"kept"`
	// SweptThrough is the highest sweep index this node has swept.
	SweptThrough uint64    `json:"sweptThrough"`
	Finished     time.Time `json:"finished"`

	leftoversDone bool
}

// maxReports bounds the reports a sweeper remembers.
const maxReports = 16

// tombstonePage is how many tombstones one read takes: more than one sweep
// holds, so a page always ends on a whole sweep but possibly the last.
const tombstonePage = 2 * state.MaxSweepBlobs

// Sweeper deletes this node's files of collected blobs and its leftovers.
// Run owns its goroutine; Sweep may also be called directly (tests).
type Sweeper struct {
	files Files
	meta  SweepMeta
	pins  *Pins
	// cursor persists the highest sweep index swept, so that a node
	// stopped mid-collection sweeps the rest when it starts again.
	cursorPath string
	// applied wakes the sweeper when entries apply (nil: only the ticker).
	applied func(ctx context.Context) <-chan state.Applied
	every   time.Duration
	log     *slog.Logger
	// onFreed, if not nil, hears of each file freed (metrics).
	onFreed func(bytes int64)

	mu      sync.Mutex // one sweep at a time; guards below
	cursor  uint64
	reports map[uint64]*Report
	// lastLeftovers is when the leftover pass last ran: it reads the
	// whole state and walks the whole disk, so it runs at most once per
	// leftoverEvery (collections back to back must not hog the node).
	lastLeftovers time.Time
}

// leftoverEvery is the least time between two leftover passes.
const leftoverEvery = time.Minute

// SweeperConfig configures NewSweeper.
type SweeperConfig struct {
	Files Files
	Meta  SweepMeta
	Pins  *Pins
	// CursorFile holds the sweep cursor (created if missing).
	CursorFile string
	// Applied subscribes to the applied entries; a KindGCSweep or a
	// restore wakes the sweeper. Every is the fallback period.
	Applied func(ctx context.Context) <-chan state.Applied
	Every   time.Duration
	Log     *slog.Logger
	OnFreed func(bytes int64)
}

// NewSweeper reads the cursor and returns a sweeper.
func NewSweeper(c SweeperConfig) (*Sweeper, error) {
	s := &Sweeper{files: c.Files, meta: c.Meta, pins: c.Pins, cursorPath: c.CursorFile, applied: c.Applied,
		every: c.Every, log: c.Log, onFreed: c.OnFreed, reports: map[uint64]*Report{}}
	if s.every <= 0 {
		s.every = time.Minute
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.pins == nil {
		s.pins = &Pins{}
	}
	b, err := os.ReadFile(c.CursorFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("gc: reading the sweep cursor: %w", err)
	default:
		if s.cursor, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return nil, fmt.Errorf("gc: sweep cursor %s is corrupt (%w): delete it (the next sweep re-checks every tombstone)", c.CursorFile, err)
		}
	}
	return s, nil
}

// Run sweeps at start, after each applied sweep, and every period, until
// ctx ends. A sweep that fails is logged and retried later.
func (s *Sweeper) Run(ctx context.Context) error {
	var events <-chan state.Applied
	if s.applied != nil {
		events = s.applied(ctx)
	}
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("garbage collection sweep failed; retrying later", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case a, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if a.Kind != state.KindGCSweep && a.Kind != state.KindRestore {
				continue
			}
		}
	}
}

// Sweep deletes the files of the blobs tombstoned since the cursor, then,
// if there were any, the leftovers, with the latest collection's times.
func (s *Sweeper) Sweep(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last *state.Tombstone
	for ctx.Err() == nil {
		ts, err := s.meta.Tombstones(s.cursor, tombstonePage)
		if err != nil {
			return fmt.Errorf("gc: reading tombstones: %w", err)
		}
		if len(ts) == tombstonePage { // the last sweep may be cut: next page
			end := ts[len(ts)-1].Index
			for len(ts) > 0 && ts[len(ts)-1].Index == end {
				ts = ts[:len(ts)-1]
			}
		}
		if len(ts) == 0 {
			break
		}
		for i := range ts {
			s.collect(ts[i])
		}
		last = &ts[len(ts)-1]
		if err := s.setCursor(last.Index); err != nil {
			return err
		}
	}
	if last == nil {
		return ctx.Err()
	}
	if err := s.leftovers(ctx, last.MarkIndex, time.Unix(0, last.Cutoff)); err != nil {
		return err
	}
	return nil
}

func (s *Sweeper) report(mark uint64) *Report {
	r := s.reports[mark]
	if r == nil {
		if len(s.reports) >= maxReports {
			var oldest uint64
			for k := range s.reports {
				if oldest == 0 || k < oldest {
					oldest = k
				}
			}
			delete(s.reports, oldest)
		}
		r = &Report{MarkIndex: mark}
		s.reports[mark] = r
	}
	return r
}

// collect deletes this node's file of one tombstoned blob unless it is in
// use, was written since the collection began, or the blob was linked or
// referenced again since the tombstone (or a later sweep owns it).
func (s *Sweeper) collect(t state.Tombstone) {
	r := s.report(t.MarkIndex)
	r.SweptThrough = max(r.SweptThrough, t.Index)
	r.Finished = time.Now()
	size, err := s.files.Stat(t.Digest)
	if err != nil {
		return // not held here
	}
	freed := s.pins.UnlessPinned(t.Digest, func() {
		touched, tomb, err := s.meta.BlobGC(t.Digest)
		if err != nil || tomb != t.Index || touched > tomb {
			size = -1
			return
		}
		mt, err := s.files.ModTime(t.Digest)
		if err != nil || !mt.Before(time.Unix(0, t.Start)) {
			size = -1
			return
		}
		if err := s.files.Delete(t.Digest); err != nil {
			size = -1
		}
	})
	if !freed || size < 0 {
		r.Kept++
		return
	}
	r.Blobs++
	r.Bytes += size
	if s.onFreed != nil {
		s.onFreed(size)
	}
	s.log.Debug("freed a collected blob", "digest", t.Digest, "bytes", size)
}

// leftovers deletes the files on this disk whose digest nothing links or
// references at the current state, written before t's cutoff, not in use
// and not linked or referenced since the state was read.
func (s *Sweeper) leftovers(ctx context.Context, mark uint64, cutoff time.Time) error {
	r := s.report(mark)
	r.leftoversDone = true
	if time.Since(s.lastLeftovers) < leftoverEvery {
		return nil
	}
	s.lastLeftovers = time.Now()
	keep := map[digest.Digest]struct{}{}
	var at uint64
	err := s.meta.View(func(v *state.View) error {
		at = v.Index()
		if err := v.Manifests(func(m state.ManifestRef) error {
			keep[m.Digest] = struct{}{}
			if m.Subject != "" {
				keep[m.Subject] = struct{}{}
			}
			if m.BodyErr != nil {
				// Its references are unknown: free no leftover this time.
				return errUnknownBody
			}
			for _, d := range append(m.Blobs, m.Children...) {
				keep[d] = struct{}{}
			}
			return nil
		}); err != nil {
			return err
		}
		return v.BlobLinks(func(l state.BlobLinkRef) error { keep[l.Digest] = struct{}{}; return nil })
	})
	if errors.Is(err, errUnknownBody) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gc: reading the state for leftovers: %w", err)
	}
	var gone []digest.Digest
	if err := s.files.Walk(func(d digest.Digest, _ int64) bool {
		if _, ok := keep[d]; !ok {
			gone = append(gone, d)
		}
		return ctx.Err() == nil
	}); err != nil {
		return fmt.Errorf("gc: listing blob files: %w", err)
	}
	for _, d := range gone {
		size, err := s.files.Stat(d)
		if err != nil {
			continue
		}
		freed := s.pins.UnlessPinned(d, func() {
			touched, _, err := s.meta.BlobGC(d)
			if err != nil || touched > at {
				size = -1
				return
			}
			mt, err := s.files.ModTime(d)
			if err != nil || !mt.Before(cutoff) {
				size = -1
				return
			}
			if err := s.files.Delete(d); err != nil {
				size = -1
			}
		})
		if freed && size >= 0 {
			r.LeftoverBlobs++
			r.LeftoverBytes += size
			if s.onFreed != nil {
				s.onFreed(size)
			}
		}
	}
	r.Finished = time.Now()
	return nil
}

var errUnknownBody = errors.New("a manifest body could not be parsed")

func (s *Sweeper) setCursor(index uint64) error {
	s.cursor = index
	tmp := s.cursorPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.FormatUint(index, 10)+"\n"), 0o600); err != nil {
		return fmt.Errorf("gc: saving the sweep cursor: %w", err)
	}
	if err := os.Rename(tmp, s.cursorPath); err != nil {
		return fmt.Errorf("gc: saving the sweep cursor: %w", err)
	}
	return nil
}

// ReportFor sweeps what this node has applied, removes its leftovers for
// the collection that marked at mark (once; cutoff is that collection's)
// and returns its report. The caller waits until this node applied the
// collection's last sweep first.
func (s *Sweeper) ReportFor(ctx context.Context, mark uint64, cutoff time.Time) (Report, error) {
	if err := s.Sweep(ctx); err != nil {
		return Report{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.report(mark).leftoversDone {
		if err := s.leftovers(ctx, mark, cutoff); err != nil {
			return Report{}, err
		}
	}
	r := *s.report(mark)
	r.SweptThrough = s.cursor
	return r, nil
}

// CursorFile is where a node keeps its sweep cursor under its data dir.
func CursorFile(dataDir string) string { return filepath.Join(dataDir, "gc-cursor") }
