package gc

import (
	"sync"

	"github.com/opencontainers/go-digest"
)

// Pins are the blobs in use on this node: being read by a client or a
// peer, fetched, or uploaded and not linked yet. The sweeper never deletes
// a pinned blob, and pinning waits while the sweeper decides on that blob,
// so a blob is either pinned before the decision (and kept) or pinned
// after the file is gone (and its user writes or fetches it again).
// The zero value is ready. Safe for concurrent use.
type Pins struct {
	mu sync.Mutex
	n  map[digest.Digest]int
}

// Pin marks d in use until release is called (once; more calls do
// nothing).
func (p *Pins) Pin(d digest.Digest) (release func()) {
	p.mu.Lock()
	if p.n == nil {
		p.n = map[digest.Digest]int{}
	}
	p.n[d]++
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			if p.n[d]--; p.n[d] <= 0 {
				delete(p.n, d)
			}
			p.mu.Unlock()
		})
	}
}

// Pinned reports whether d is in use.
func (p *Pins) Pinned(d digest.Digest) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n[d] > 0
}

// UnlessPinned runs fn while no one can pin d, unless d is pinned now; it
// reports whether fn ran. Whoever deletes a blob file (the sweeper, the
// evictor) decides and deletes inside fn.
func (p *Pins) UnlessPinned(d digest.Digest, fn func()) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[d] > 0 {
		return false
	}
	fn()
	return true
}
