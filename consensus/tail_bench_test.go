package consensus

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkTailWrites measures, with the production Raft timing (in-memory
// transport, stores on badger), how long a write takes through a
// metadata follower (forwarded to the leader, returning once the follower
// applied it from its tail) and how long a write on the leader takes to
// be applied on a follower, with the median and 99th percentile:
//
//	go test -run '^$' -bench TailWrites -benchtime 500x ./consensus/
func BenchmarkTailWrites(b *testing.B) {
	c := newCluster(b, 3, func(cfg *Config) { cfg.tune = nil })
	h := newTailHarness(b, c)
	f, other := h.start("f1"), h.start("f2")
	h.caughtUp(f)
	h.caughtUp(other)

	b.Run("write-through-follower", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := range b.N {
			start := time.Now()
			mustPut(b, f, manifest("bench/f", fmt.Sprint(i), ""), "latest")
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
	b.Run("leader-write-visible-on-follower", func(b *testing.B) {
		l := h.leader()
		lat := make([]time.Duration, 0, b.N)
		for i := range b.N {
			start := time.Now()
			mustPut(b, l, manifest("bench/l", fmt.Sprint(i), ""), "latest")
			if err := f.WaitApplied(ctx, l.AppliedIndex()); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
	// The usual case on a DaemonSet: a client writes through its own
	// node, a follower; the leader notifies the commit (notify.go).
	b.Run("other-follower-write-visible-on-follower", func(b *testing.B) {
		l := h.leader()
		lat := make([]time.Duration, 0, b.N)
		for i := range b.N {
			start := time.Now()
			mustPut(b, other, manifest("bench/o", fmt.Sprint(i), ""), "latest")
			if err := f.WaitApplied(ctx, l.AppliedIndex()); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(start))
		}
		reportLatency(b, lat)
	})
}

func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
