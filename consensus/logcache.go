package consensus

import (
	"sync"

	"github.com/hashicorp/raft"
)

// Bounds of the in-memory Raft log cache. Raft reads the newest entries
// again right after appending them (to apply them, and on the leader to
// replicate them), so the cache saves a badger read each time. It keeps at
// most logCacheEntries entries of at most logCacheEntryBytes each: at most
// 16 MiB whatever the entries. A larger entry (a manifest of up to 4 MiB)
// is read from badger when needed. raft.NewLogCache(512, …), used before,
// kept the last 512 entries whatever their size: up to gigabytes.
const (
	logCacheEntries    = 256
	logCacheEntryBytes = 64 << 10
	// logCacheMaxBytes is the bound the two above give.
	logCacheMaxBytes = logCacheEntries * logCacheEntryBytes
)

// logCache is a raft.LogStore that keeps recent small entries in memory in
// front of another store, bounded in entries and bytes (see above). Safe
// for concurrent use, as raft requires.
type logCache struct {
	store raft.LogStore

	mu    sync.Mutex
	ring  []*raft.Log // entry i at i % len(ring); nil when not cached
	bytes int         // data held by ring
}

var _ raft.LogStore = (*logCache)(nil)

func newLogCache(store raft.LogStore) *logCache {
	return &logCache{store: store, ring: make([]*raft.Log, logCacheEntries)}
}

// logBytes is the memory an entry holds: the capacity of its slices, since
// a short slice may keep a large array alive.
func logBytes(l *raft.Log) int { return cap(l.Data) + cap(l.Extensions) }

func (c *logCache) GetLog(index uint64, l *raft.Log) error {
	c.mu.Lock()
	cached := c.ring[index%uint64(len(c.ring))]
	c.mu.Unlock()
	if cached != nil && cached.Index == index {
		*l = *cached
		return nil
	}
	return c.store.GetLog(index, l)
}

func (c *logCache) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores the entries, then caches those small enough. An entry
// is cached only once stored, so the cache never holds what the store
// lacks.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		slot := l.Index % uint64(len(c.ring))
		if old := c.ring[slot]; old != nil {
			c.bytes -= logBytes(old)
		}
		c.ring[slot] = nil
		if logBytes(l) <= logCacheEntryBytes {
			c.ring[slot] = l
			c.bytes += logBytes(l)
		}
	}
	return nil
}

func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }

// DeleteRange empties the cache (as raft's LogCache does): deletes come
// from compaction and conflicting suffixes, both rare.
func (c *logCache) DeleteRange(min, max uint64) error {
	c.mu.Lock()
	clear(c.ring)
	c.bytes = 0
	c.mu.Unlock()
	return c.store.DeleteRange(min, max)
}

// cachedBytes is the data the cache holds.
func (c *logCache) cachedBytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}
