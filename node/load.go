package node

import (
	"math"
	"sync"
	"time"
)

// loadHalfLife is how fast uploadLoad forgets: bytes sent 10 s ago count
// half.
const loadHalfLife = 10 * time.Second

// uploadLoad is how much a node has been sending to peers lately: a byte
// count that decays with loadHalfLife. Fetchers prefer, among equally near
// holders, the one that sent least lately: after a push, the node that
// received it has just sent a replica copy, so the nodes pulling the image
// next start from the replica holder and from one another, not from it.
type uploadLoad struct {
	mu    sync.Mutex
	bytes float64
	at    time.Time
}

func (l *uploadLoad) add(n int, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bytes = l.decayed(now) + float64(n)
	l.at = now
}

// value is the decayed byte count at now.
func (l *uploadLoad) value(now time.Time) float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.decayed(now)
}

func (l *uploadLoad) decayed(now time.Time) float64 {
	if l.at.IsZero() {
		return 0
	}
	return l.bytes * math.Exp2(-now.Sub(l.at).Seconds()/loadHalfLife.Seconds())
}
