package fetch

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// maxProviders is how many providers one lookup asks the DHT for.
	maxProviders = 20
	// providerTTL is how long a lookup's answer is reused.
	providerTTL = 30 * time.Second
	// maxCachedLookups bounds the cache: past it, all are dropped rather
	// than tracking their age.
	maxCachedLookups = 10000
	// lookupTimeout bounds one provider lookup.
	lookupTimeout = 5 * time.Second
)

// ProviderFinder is the provider routing (the DHT): which peers announced
// a blob.
type ProviderFinder interface {
	FindProviders(ctx context.Context, d digest.Digest, limit int) ([]peer.ID, error)
}

// providerCache is the DHT's providers of recent blobs, reused for
// providerTTL.
type providerCache struct {
	finder ProviderFinder
	lookup prometheus.Observer // nil: not observed
	log    *slog.Logger

	mu      sync.Mutex
	entries map[digest.Digest]providerEntry
}

type providerEntry struct {
	peers   []peer.ID
	expires time.Time
}

func newProviderCache(finder ProviderFinder, lookup prometheus.Observer, log *slog.Logger) *providerCache {
	return &providerCache{finder: finder, lookup: lookup, log: log, entries: map[digest.Digest]providerEntry{}}
}

// find returns the DHT's providers of d, from the cache while its answer
// is fresh. A provider record names a peer, it does not prove that the
// peer is one of ours: the caller admits each one before asking it
// (Cluster.Admit).
func (c *providerCache) find(ctx context.Context, d digest.Digest) []peer.ID {
	c.mu.Lock()
	e, ok := c.entries[d]
	c.mu.Unlock()
	if ok && time.Now().Before(e.expires) && len(e.peers) > 0 {
		return append([]peer.ID{}, e.peers...)
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	start := time.Now()
	found, err := c.finder.FindProviders(lctx, d, maxProviders)
	if c.lookup != nil {
		c.lookup.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		c.log.Debug("provider lookup failed", "digest", d, "err", err)
	}
	if len(found) > maxProviders {
		found = found[:maxProviders]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) > maxCachedLookups {
		clear(c.entries)
	}
	c.entries[d] = providerEntry{peers: found, expires: time.Now().Add(providerTTL)}
	return append([]peer.ID{}, found...)
}

// drop forgets a cached provider that failed to serve d.
func (c *providerCache) drop(d digest.Digest, p peer.ID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[d]
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
	c.entries[d] = e
}
