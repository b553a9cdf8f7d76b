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

// BenchmarkTailCatchUp measures how long a restarted follower takes to
// catch up with 1,000 writes it missed, from the log (range) and, with a
// log compacted past it, from a snapshot:
//
//	go test -run '^$' -bench TailCatchUp -benchtime 3x ./consensus/
func BenchmarkTailCatchUp(b *testing.B) {
	const missed = 1000
	for _, bc := range []struct {
		name  string
		tweak func(*Config)
	}{
		{"range", nil},
		{"snapshot", func(cfg *Config) {
			cfg.SnapshotThreshold, cfg.SnapshotInterval, cfg.TrailingLogs = 64, 20*time.Millisecond, 16
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := newCluster(b, 3, bc.tweak)
			h := newTailHarness(b, c)
			f := h.start("f1")
			h.caughtUp(f)
			var took time.Duration
			for i := range b.N {
				behind := f.TailStatus().Applied
				h.stop("f1")
				putN(b, h.leader(), "r", i*missed, missed)
				if bc.tweak != nil {
					c.eventually(15*time.Second, "logs compacted past the follower", func() bool {
						for _, s := range c.live() {
							if first, err := s.logs.FirstIndex(); err != nil || first <= behind+1 {
								return false
							}
						}
						return true
					})
				}
				start := time.Now()
				f = h.open("f1", nil)
				if err := f.Follow(nil); err != nil {
					b.Fatal(err)
				}
				want := h.leader().AppliedIndex()
				c.eventually(30*time.Second, "caught up", func() bool { return f.AppliedIndex() >= want })
				took += time.Since(start)
			}
			b.ReportMetric(float64(took.Milliseconds())/float64(b.N), "ms/catch-up")
			b.ReportMetric(float64(f.TailStatus().Snapshots), "snapshots")
		})
	}
}
