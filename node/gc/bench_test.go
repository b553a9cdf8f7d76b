package gc

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// benchState fills m with manifests image manifests over blobs blob links
// in 100 repositories: manifest i references its config (blob 4i) and
// layers 4i+1..4i+3; blobs past 4×manifests are linked, unreferenced.
func benchState(b *testing.B, m *meta, manifests, blobs int) {
	b.Helper()
	d := func(i int) digest.Digest { return digest.FromString(fmt.Sprintf("blob-%d", i)) }
	repo := func(i int) string { return fmt.Sprintf("bench/r%02d", i%100) }
	old := time.Now().Add(-2 * time.Hour)
	for i := range blobs {
		m.link(repo(i/4), d(i), 1000, old)
	}
	for i := range manifests {
		m.put(repo(i), ocispec.MediaTypeImageManifest, imageBody(d(4*i), d(4*i+1), d(4*i+2), d(4*i+3)), "", "t")
	}
}

// peakHeap samples the heap in use until stop is called and returns the
// highest value seen.
func peakHeap() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// BenchmarkMarkAndSweep: a collection over 10,000 manifests and 50,000
// blob links (10,000 of them unreferenced) on a real badger state: the
// mark, and the mark with its sweep batches applied. Reports the blobs
// freed and the peak growth of the heap in use during the run (over the
// heap with the database open: badger's own tables are not counted).
func BenchmarkMarkAndSweep(b *testing.B) {
	const manifests, blobs = 10_000, 50_000
	for _, dry := range []bool{true, false} {
		name := "mark"
		if !dry {
			name = "mark+sweep"
		}
		b.Run(name, func(b *testing.B) {
			var freed int
			var peak, base uint64
			for b.Loop() {
				b.StopTimer()
				m := newMeta(b)
				benchState(b, m, manifests, blobs)
				runtime.GC()
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				base = ms.HeapInuse
				stop := peakHeap()
				b.StartTimer()
				plan, err := MarkAndSweep(context.Background(), m, Options{DryRun: dry, Grace: time.Hour})
				b.StopTimer()
				p := stop()
				peak = max(peak, p-min(base, p))
				if err != nil {
					b.Fatal(err)
				}
				freed = len(plan.Blobs)
				b.StartTimer()
			}
			if freed != blobs-4*manifests {
				b.Fatalf("freed %d blobs; want %d", freed, blobs-4*manifests)
			}
			b.ReportMetric(float64(freed), "blobs-freed")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-growth-MiB")
		})
	}
}
