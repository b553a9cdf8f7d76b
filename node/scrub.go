package node

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
)

const (
	// DefaultScrubRate reads every blob again at 16 MiB/s: about 1.4 TB a
	// day, a small share of any disk's bandwidth.
	DefaultScrubRate = 16 << 20
	// DefaultScrubInterval is the pause between two scrub passes.
	DefaultScrubInterval = 24 * time.Hour
	// firstScrubAfter is the longest wait before the first pass after a
	// start, so that a node restarted more often than its interval still
	// scrubs.
	firstScrubAfter = 10 * time.Minute
)

// scrubber re-hashes every stored blob, pass after pass, at a bounded rate,
// whether or not it was verified before: decay under the filesystem does
// not show in a file's stamp. A blob that does not match is quarantined by
// the blob store, which reports it to the node (blobCorrupt: counted, and
// fetched again from peers).
type scrubber struct {
	blobs    scrubbedBlobs
	scrubbed counter // bytes re-hashed (meshreg_scrub_bytes_total)
	log      *slog.Logger
	rate     int64 // bytes per second; 0: off
	interval time.Duration

	mu sync.Mutex
	st ScrubStatus
}

// ScrubStatus is the scrub part of the status document.
type ScrubStatus struct {
	RateBytesPerSecond int64  `json:"rate_bytes_per_second"` // 0: the scrub is off
	Interval           string `json:"interval"`
	Running            bool   `json:"running"`
	Passes             int64  `json:"passes"` // completed since start
	// Of the last completed pass:
	LastPassEnded *time.Time `json:"last_pass_ended,omitempty"`
	LastPassBlobs int64      `json:"last_pass_blobs"`
	LastPassBytes int64      `json:"last_pass_bytes"`
	// CorruptFound counts the corrupt blobs the scrub found since start.
	CorruptFound int64 `json:"corrupt_found"`
}

// scrubbedBlobs are the blobs the scrub lists and re-hashes
// (blobstore.Store): Verify with force re-hashes even a blob verified
// before, calls throttle after each read, and quarantines a corrupt copy.
type scrubbedBlobs interface {
	Walk(fn func(d digest.Digest, size int64) bool) error
	Verify(ctx context.Context, d digest.Digest, force bool, throttle func(n int) error) error
}

// counter is the part of a Prometheus counter the scrub adds to.
type counter interface{ Add(float64) }

func newScrubber(blobs scrubbedBlobs, scrubbed counter, rate int64, interval time.Duration, log *slog.Logger) *scrubber {
	return &scrubber{blobs: blobs, scrubbed: scrubbed, log: log, rate: rate, interval: interval,
		st: ScrubStatus{RateBytesPerSecond: rate, Interval: interval.String()}}
}

func (s *scrubber) status() ScrubStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Run scrubs until ctx ends; with a rate of 0 it returns at once.
func (s *scrubber) Run(ctx context.Context) error {
	if s.rate <= 0 {
		return nil
	}
	wait := min(s.interval, firstScrubAfter)
	for {
		if sleepCtx(ctx, wait) != nil {
			return nil
		}
		start := time.Now()
		blobs, bytes, corrupt := s.pass(ctx)
		if ctx.Err() != nil {
			return nil
		}
		end := time.Now()
		s.mu.Lock()
		s.st.Passes++
		s.st.LastPassEnded = &end
		s.st.LastPassBlobs, s.st.LastPassBytes = blobs, bytes
		s.mu.Unlock()
		s.log.Info("scrubbed the stored blobs", "blobs", blobs, "bytes", bytes, "corrupt", corrupt,
			"took", end.Sub(start).Round(time.Millisecond))
		wait = s.interval
	}
}

// pass verifies every blob held now once, reading at most rate bytes a
// second, and returns how many blobs and bytes it checked and how many
// were corrupt.
func (s *scrubber) pass(ctx context.Context) (blobs, bytes, corrupt int64) {
	s.mu.Lock()
	s.st.Running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.st.Running = false
		s.mu.Unlock()
	}()
	var all []digest.Digest
	if err := s.blobs.Walk(func(d digest.Digest, _ int64) bool {
		all = append(all, d)
		return ctx.Err() == nil
	}); err != nil {
		s.log.Warn("scrub: listing the stored blobs failed", "err", err)
	}
	start := time.Now()
	var read int64
	throttle := func(n int) error {
		read += int64(n)
		s.scrubbed.Add(float64(n))
		due := start.Add(time.Duration(float64(read) / float64(s.rate) * float64(time.Second)))
		return sleepCtx(ctx, time.Until(due))
	}
	for _, d := range all {
		before := read
		err := s.blobs.Verify(ctx, d, true, throttle)
		switch {
		case ctx.Err() != nil:
			return blobs, bytes, corrupt
		case err == nil:
			blobs++
			bytes += read - before
		case errors.Is(err, blobstore.ErrCorrupt):
			corrupt++
			s.mu.Lock()
			s.st.CorruptFound++
			s.mu.Unlock()
		case errors.Is(err, blobstore.ErrNotFound):
			// Deleted or quarantined since the listing.
		default:
			s.log.Warn("scrub: verifying a blob failed", "digest", d, "err", err)
		}
	}
	return blobs, bytes, corrupt
}
