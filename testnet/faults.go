package testnet

import (
	"io"
	"time"

	"github.com/opencontainers/go-digest"
)

// Faults a node can be given (node.WithServeFault, through
// StartInProcessClusterWith) to play a bad peer.

// CorruptPeer makes a node send wrong bytes: one bit of every MiB it serves
// to a peer is flipped, so the size is right and only the digest tells.
func CorruptPeer(_ digest.Digest, r io.Reader) io.Reader {
	return &corrupter{r: r}
}

type corrupter struct {
	r   io.Reader
	off int64
}

func (c *corrupter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	for i := range n {
		if (c.off+int64(i))%(1<<20) == 0 {
			p[i] ^= 0x01
		}
	}
	c.off += int64(n)
	return n, err
}

// SlowPeer makes a node send blob bytes to peers at about bytesPerSec
// after a first-byte delay of latency: a far or congested link.
func SlowPeer(bytesPerSec int64, latency time.Duration) func(digest.Digest, io.Reader) io.Reader {
	return func(_ digest.Digest, r io.Reader) io.Reader {
		return &throttled{r: r, rate: bytesPerSec, latency: latency}
	}
}

type throttled struct {
	r       io.Reader
	rate    int64
	latency time.Duration
	start   time.Time
	sent    int64
}

func (t *throttled) Read(p []byte) (int, error) {
	if t.start.IsZero() {
		time.Sleep(t.latency)
		t.start = time.Now()
	}
	if len(p) > int(t.rate/10)+1 {
		p = p[:t.rate/10+1] // ~100 ms of bytes per read
	}
	n, err := t.r.Read(p)
	t.sent += int64(n)
	due := t.start.Add(time.Duration(float64(t.sent) / float64(t.rate) * float64(time.Second)))
	time.Sleep(time.Until(due))
	return n, err
}
