package p2p

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	"github.com/opencontainers/go-digest"
)

// BenchmarkProvide measures what announcing blobs costs, to size the
// reprovide sweep (node's reprovider): one provide per op, on a DHT of
// five hosts in one process, sequentially and 8 at a time (the sweep's
// concurrency).
func BenchmarkProvide(b *testing.B) {
	const size = 5
	var hosts []*Host
	var routers []*Routing
	for range size {
		h := newTestHost(b, nil)
		r, err := NewRouting(h, testLogger(b))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { r.Close() })
		hosts, routers = append(hosts, h), append(routers, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, h := range hosts[1:] {
		if err := h.Connect(ctx, addrOf(b, hosts[0], ma.P_TCP)); err != nil {
			b.Fatal(err)
		}
	}
	for _, r := range routers {
		for r.RoutingTableSize() < 1 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	seq := 0
	next := func() digest.Digest {
		seq++
		return digest.FromString(fmt.Sprintf("blob %d %d", b.N, seq))
	}
	for _, workers := range []int{1, 8} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			work := make(chan digest.Digest)
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for d := range work {
						if err := routers[0].Provide(ctx, d); err != nil {
							b.Error(err)
						}
					}
				})
			}
			start := time.Now()
			for b.Loop() {
				work <- next()
			}
			close(work)
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "provides/s")
		})
	}
}
