package scenario

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// pushed is an acknowledged push: what every live node must serve at the
// end.
type pushed struct {
	Repo, Tag string
	Manifest  digest.Digest
	Blobs     []ocispec.Descriptor // config and layers
	Bytes     int64                // manifest and blobs
	Node      string               // the node it was pushed to
	At        time.Time
}

// history records every push and pull of the run. Safe for concurrent
// use.
type history struct {
	mu          sync.Mutex
	acked       []pushed
	byImage     map[string]pushed // named pushes of push events
	pushes      Counts
	pulls       Counts
	pullLatency map[string][]time.Duration // region → latencies of good pulls
	sides       map[string]*SideStats      // workload pushes by partition side
}

func newHistory() *history {
	return &history{byImage: map[string]pushed{}, pullLatency: map[string][]time.Duration{}, sides: map[string]*SideStats{}}
}

func (h *history) push(p pushed, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pushes.Attempted++
	if err != nil {
		h.pushes.Failed++
		return
	}
	h.pushes.Acknowledged++
	h.pushes.Bytes += p.Bytes
	h.acked = append(h.acked, p)
}

// attempt records a workload push by where its node stood: "cut-off"
// (in the set a partition cut off), "rest" (outside it during a
// partition), or "whole" (no partition).
func (h *history) attempt(side, node string, took time.Duration, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.sides[side]
	if st == nil {
		st = &SideStats{Side: side}
		h.sides[side] = st
	}
	st.Attempted++
	st.MaxSeconds = max(st.MaxSeconds, took.Seconds())
	if err == nil {
		st.Acknowledged++
		return
	}
	st.Failed++
	if len(st.Errors) < 5 {
		st.Errors = append(st.Errors, fmt.Sprintf("%s after %.1fs: %s", node, took.Seconds(), clipErr(err.Error(), 300)))
	}
}

func clipErr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (h *history) pull(region string, took time.Duration, bytes int64, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pulls.Attempted++
	if err != nil {
		h.pulls.Failed++
		return
	}
	h.pulls.Acknowledged++
	h.pulls.Bytes += bytes
	h.pullLatency[region] = append(h.pullLatency[region], took)
}

func (h *history) randomAcked() (pushed, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.acked) == 0 {
		return pushed{}, false
	}
	return h.acked[rand.IntN(len(h.acked))], true
}

func (h *history) allAcked() []pushed {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]pushed(nil), h.acked...)
}

// nextSeed gives every generated layer bytes of its own.
func (r *run) nextSeed() uint64 {
	r.seedMu.Lock()
	defer r.seedMu.Unlock()
	r.seed++
	return r.seed
}

// pushImage pushes an image of layers random layers of size bytes and a
// config to n, tagged tag, and returns it once the manifest PUT got its
// 201 (which, with --replicas, means the blobs have their copies).
func (r *run) pushImage(ctx context.Context, n *node, repo, tag string, layers int, size int64) (pushed, error) {
	c := testnet.NewClient(n.c.URL())
	c.HTTP.Timeout = 2 * time.Minute
	p := pushed{Repo: repo, Tag: tag, Node: n.spec.Name}
	var descs []ocispec.Descriptor
	for range layers {
		seed := r.nextSeed()
		d := testnet.StreamDigest(seed, size)
		if err := c.PushBlob(ctx, repo, d, size, testnet.NewStream(seed, size)); err != nil {
			return p, fmt.Errorf("push layer to %s: %w", n.spec.Name, err)
		}
		descs = append(descs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: size})
	}
	cfg, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{}}, "testnet": tag + "-" + testnet.RandomHex(4)})
	cd, err := c.PushBytes(ctx, repo, cfg)
	if err != nil {
		return p, fmt.Errorf("push config to %s: %w", n.spec.Name, err)
	}
	config := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: config, Layers: descs})
	md, err := c.PutManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		return p, fmt.Errorf("push manifest to %s: %w", n.spec.Name, err)
	}
	p.Manifest, p.Blobs, p.At = md, append([]ocispec.Descriptor{config}, descs...), time.Now()
	p.Bytes = int64(len(m)) + config.Size + int64(layers)*size
	return p, nil
}

// pullImage pulls p's manifest by tag through n and every blob it names,
// verifying digests and sizes. It returns the bytes read.
func pullImage(ctx context.Context, n *node, p pushed) (int64, error) {
	c := testnet.NewClient(n.c.URL())
	c.HTTP.Timeout = 2 * time.Minute
	body, _, served, err := c.GetManifest(ctx, p.Repo, p.Tag)
	if err != nil {
		return 0, fmt.Errorf("%s: manifest %s:%s: %w", n.spec.Name, p.Repo, p.Tag, err)
	}
	if got := digest.FromBytes(body); got != p.Manifest || (served != "" && served != p.Manifest.String()) {
		return 0, fmt.Errorf("%s: %s:%s is %s (header %q), acknowledged as %s", n.spec.Name, p.Repo, p.Tag, got, served, p.Manifest)
	}
	total := int64(len(body))
	for _, b := range p.Blobs {
		if err := c.VerifyBlob(ctx, p.Repo, b.Digest, b.Size); err != nil {
			return total, fmt.Errorf("%s: %s: %w", n.spec.Name, p.Repo, err)
		}
		total += b.Size
	}
	return total, nil
}

// runWorkload runs the pushers and pullers until each has done its share
// of the counts or the workload's duration is over.
func (r *run) runWorkload(ctx context.Context) {
	w := r.s.Workload
	if w.Push.Count == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, w.Duration.Duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := range w.Push.Concurrency {
		share := w.Push.Count / w.Push.Concurrency
		if i < w.Push.Count%w.Push.Concurrency {
			share++
		}
		wg.Go(func() {
			for j := range share {
				if ctx.Err() != nil {
					return
				}
				n := r.cl.randomRunning()
				if n == nil {
					sleep(ctx, time.Second)
					continue
				}
				side := r.cl.side(n)
				start := time.Now()
				pctx, cancel := context.WithTimeout(ctx, w.Push.Timeout.Duration)
				p, err := r.pushImage(pctx, n, w.Repo, fmt.Sprintf("w%d-%d", i, j), w.Push.Layers, int64(w.Push.LayerSize))
				cancel()
				if ctx.Err() != nil && err != nil {
					return // cut off by the end of the workload: neither acknowledged nor failed
				}
				r.hist.push(p, err)
				r.hist.attempt(side, n.spec.Name, time.Since(start), err)
				if err != nil {
					r.log.Debug("push failed", "err", err)
					sleep(ctx, 500*time.Millisecond) // no leader or a dead node: slow down
				}
				sleep(ctx, w.Push.Interval.Duration)
			}
		})
	}
	for range w.Pull.Concurrency {
		share := w.Pull.Count / w.Pull.Concurrency
		wg.Go(func() {
			for j := 0; j < share; {
				if ctx.Err() != nil {
					return
				}
				p, ok := r.hist.randomAcked()
				if !ok {
					sleep(ctx, 200*time.Millisecond) // nothing acknowledged yet
					continue
				}
				j++
				n := r.cl.randomRunning(r.cl.byName[p.Node])
				if n == nil {
					sleep(ctx, time.Second)
					continue
				}
				start := time.Now()
				bytes, err := pullImage(ctx, n, p)
				if ctx.Err() != nil && err != nil {
					return
				}
				r.hist.pull(n.spec.Region, time.Since(start), bytes, err)
				if err != nil {
					r.log.Debug("pull failed", "err", err)
				}
				sleep(ctx, w.Pull.Interval.Duration)
			}
		})
	}
	wg.Wait()
	r.hist.mu.Lock()
	pushes, pulls := r.hist.pushes, r.hist.pulls
	r.hist.mu.Unlock()
	r.log.Info("workload done", "pushes", pushes, "pulls", pulls)
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
