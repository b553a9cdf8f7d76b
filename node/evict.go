package node

import (
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/node/gc"
	"github.com/meshreg/meshreg/node/replicate"
)

// Cache eviction under a disk budget (--max-disk) lives in package
// replicate (Evictor); this is its glue: the budget from the config, the
// recency of reads, the pins, the metrics, and the disk guard that refuses
// new blobs while the node is over its budget with nothing to evict
// (disk.go).
//
// Recency: the last read of each blob is kept in memory (recency), at most
// maxRecency entries; a blob without one (never read since the start, or
// dropped from a full index) counts as read when its file was written. A
// blob read through a mirrored repository may go while one other live
// member holds it (not --replicas): its upstream can give it back.
// Nothing is persisted: after a restart the order is that of arrival, which
// is what a cache that just started knows anyway, and no write happens on
// the read path.

// maxRecency bounds the recency index (about 150 bytes an entry).
const maxRecency = 1 << 18

// DefaultMaxDiskLow is the low-water mark, as a share of --max-disk, that
// eviction brings a node down to when --max-disk-low is not set.
const DefaultMaxDiskLow = 0.9

// evictEvery is how often the evictor compares the blob bytes with the
// budget (an atomic read); evictRetry how often it tries again after a
// pass that could not get under it.
const (
	evictEvery = time.Second
	evictRetry = 10 * time.Second
)

// recency is when each blob was last read on this node, and whether it
// was read through a mirrored repository (its upstream can give it back).
// Safe for concurrent use.
type recency struct {
	mu   sync.Mutex
	last map[digest.Digest]readMark
}

type readMark struct {
	at time.Time
	// mirrored: read through a repository of an upstream (a mirror is
	// read-only, so the bytes came from there).
	mirrored bool
}

// touch records a read of d now (mirrored: through a mirrored
// repository). With the index full, a blob not in it stays out (it counts
// as read when written, and as pushed content).
func (r *recency) touch(d digest.Digest, mirrored bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[digest.Digest]readMark{}
	}
	m, ok := r.last[d]
	if ok || len(r.last) < maxRecency {
		r.last[d] = readMark{at: time.Now(), mirrored: m.mirrored || mirrored}
	}
}

func (r *recency) get(d digest.Digest) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[d].at
}

// mirrored reports whether d was read through a mirrored repository.
func (r *recency) mirrored(d digest.Digest) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last[d].mirrored
}

func (r *recency) forget(d digest.Digest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.last, d)
}

// evictMetrics count what eviction did.
type evictMetrics struct {
	evictions *prometheus.CounterVec
	bytes     prometheus.Counter
}

func newEvictMetrics() evictMetrics {
	m := evictMetrics{
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshreg_evictions_total",
			Help: "Eviction under --max-disk, by result: evicted (a blob deleted here), handed_off (a copy made on another node first), stuck (a pass that ended over the budget)."},
			[]string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshreg_evicted_bytes_total",
			Help: "Bytes of blobs evicted from this node's disk under --max-disk."}),
	}
	for _, r := range []string{"evicted", "handed_off", "stuck"} {
		m.evictions.WithLabelValues(r)
	}
	return m
}

// nodePins are the node's pins (gc.Pins) as replication sees them, read at
// each call (the collector is set up after the replicator).
type nodePins struct{ n *Node }

func (p nodePins) Pin(d digest.Digest) func() { return p.n.gc.pins.Pin(d) }
func (p nodePins) UnlessPinned(d digest.Digest, fn func()) bool {
	return p.n.gc.pins.UnlessPinned(d, fn)
}

// maxDiskLow is the low-water mark eviction brings the node down to.
func (c Config) maxDiskLow() int64 {
	if c.MaxDiskLow > 0 {
		return c.MaxDiskLow
	}
	return max(1, int64(float64(c.MaxDisk)*DefaultMaxDiskLow))
}

// setUpEviction makes the evictor when --max-disk is set and the node can
// delete its blob files (files; nil: a fake store, nothing evicted).
func (n *Node) setUpEviction(files gc.Files) {
	if n.cfg.MaxDisk <= 0 {
		return
	}
	if files == nil {
		n.log.Warn("--max-disk is set but this node cannot delete blob files: nothing is evicted")
		return
	}
	e, err := replicate.NewEvictor(n.replicas, replicate.EvictConfig{
		Budget: n.cfg.MaxDisk, Low: n.cfg.maxDiskLow(),
		Used:  func() int64 { _, b := n.blobs.Stats(); return b },
		Files: files,
		LastRead: func(d digest.Digest) time.Time {
			t := n.reads.get(d)
			if mt, err := files.ModTime(d); err == nil && mt.After(t) {
				t = mt
			}
			return t
		},
		Refetchable: n.reads.mirrored,
		Every:       evictEvery, RetryStuck: evictRetry,
		OnEvicted: func(d digest.Digest, size int64) {
			n.reads.forget(d)
			n.evictMetrics.evictions.WithLabelValues("evicted").Inc()
			n.evictMetrics.bytes.Add(float64(size))
		},
		OnHandedOff: func(digest.Digest) { n.evictMetrics.evictions.WithLabelValues("handed_off").Inc() },
		OnStuck:     func() { n.evictMetrics.evictions.WithLabelValues("stuck").Inc() },
		Log:         n.log.With("component", "evict"),
	})
	if err != nil {
		n.log.Error("cache eviction is off", "err", err)
		return
	}
	n.evictor = e
	n.disk.budget, n.disk.budgetRefused = e, n.metrics.writesRefused.WithLabelValues("budget")
}

// evictLoops is the evictor, when there is one.
func (n *Node) evictLoops() []loop {
	if n.evictor == nil {
		return nil
	}
	return []loop{n.evictor}
}

// blobCommitted asks for an eviction pass now if a new blob took the node
// past its budget (the evictor checks; this never blocks).
func (n *Node) blobCommitted() {
	if n.evictor != nil {
		n.evictor.Kick()
	}
}

// noteRead records a read of blob d (by a client or a peer) for eviction;
// origin is the upstream of the repository it was read through (nil:
// pushed content, or a peer's read).
func (n *Node) noteRead(d digest.Digest, origin *fetch.Origin) {
	if n.evictor != nil {
		n.reads.touch(d, origin != nil)
	}
}
