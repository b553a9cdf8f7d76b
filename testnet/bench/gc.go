package main

// The garbage collection benchmark (-gc, on by default): push throughput
// on a 3-node meshreg cluster with and without a collection running.
//
// -gc-workers workers push small images (a unique config and a unique
// -gc-layer-size layer, then the manifest) through both followers for
// -gc-duration, and delete each image once pushed, so garbage keeps
// growing. The same load runs twice: alone, then while the leader runs
// collections -gc-pause apart (POST /_meshreg/v1/gc?grace=2s: the images
// deleted more than 2 s ago are collected on every node; 0: back to back). The table gives
// images pushed per second in both phases, their ratio, and the
// collections made with what they freed. Timing goals (the issue's: at
// most 10 % lower) are read here, never asserted.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/testnet"
)

const gcRepo = "bench/gc"

// gcPushes pushes and deletes images through targets until ctx ends or d
// passes; it returns the images pushed and the failures.
func gcPushes(ctx context.Context, targets []*server, workers int, layerSize int, d time.Duration, phase string) (pushed, failed int64, firstErr error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var mu sync.Mutex
	var ok, bad atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			s := targets[w%len(targets)]
			for i := 0; ctx.Err() == nil; i++ {
				err := gcPushOne(ctx, s, fmt.Sprintf("%s-%d-%d", phase, w, i), layerSize)
				if ctx.Err() != nil {
					return // cut by the end of the phase: not counted
				}
				if err != nil {
					bad.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return ok.Load(), bad.Load(), firstErr
}

func gcPushOne(ctx context.Context, s *server, name string, layerSize int) error {
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"bench":"` + name + `"}`)
	layer := testnet.RandomBytes(layerSize)
	cd, err := s.client.PushBytes(ctx, gcRepo, cfg)
	if err != nil {
		return err
	}
	ld, err := s.client.PushBytes(ctx, gcRepo, layer)
	if err != nil {
		return err
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: ld, Size: int64(len(layer))}}})
	md, err := s.client.PutManifest(ctx, gcRepo, name, ocispec.MediaTypeImageManifest, m)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.url()+"/v2/"+gcRepo+"/manifests/"+md.String(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("DELETE manifest %s: %s", md, resp.Status)
	}
	return nil
}

// gcRun runs one collection through s and returns its result.
func gcRun(ctx context.Context, s *server, grace time.Duration) (api.GCResult, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url()+"/_meshreg/v1/gc?grace="+grace.String(), nil)
	if err != nil {
		return api.GCResult{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return api.GCResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return api.GCResult{}, fmt.Errorf("POST gc: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l api.GCLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return api.GCResult{}, err
		}
		if l.Error != "" {
			return api.GCResult{}, fmt.Errorf("gc: %s", l.Error)
		}
		if l.Result != nil {
			return *l.Result, nil
		}
	}
	return api.GCResult{}, fmt.Errorf("gc: no result (%v)", sc.Err())
}

func runGC(ctx context.Context, c config, bin, dir string) (string, error) {
	cl, err := startCluster(ctx, bin, dir, clusterSize, "--gc-interval", "0s")
	if err != nil {
		return "", fmt.Errorf("gc: %w", err)
	}
	defer cl.stop()
	const grace = 2 * time.Second
	layer := int(c.gcLayerSize)

	// Warm-up (not counted), then the load alone.
	if _, _, err := gcPushes(ctx, cl.followers, 1, layer, time.Second, "warmup"); err != nil {
		return "", fmt.Errorf("gc: warm-up: %w", err)
	}
	alone, aloneFailed, err1 := gcPushes(ctx, cl.followers, c.gcWorkers, layer, c.gcDuration, "alone")
	logf("gc: %d images pushed in %v without a collection (%d failed)", alone, c.gcDuration, aloneFailed)
	time.Sleep(grace) // the load's deleted images are now garbage

	// The same load while the leader collects back to back.
	gctx, stop := context.WithCancel(ctx)
	var runs []api.GCResult
	var runErr error
	var took []float64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for gctx.Err() == nil {
			start := time.Now()
			r, err := gcRun(gctx, cl.leader, grace)
			if gctx.Err() != nil {
				return
			}
			if err != nil {
				runErr = err
				return
			}
			runs = append(runs, r)
			took = append(took, float64(time.Since(start).Milliseconds()))
			select {
			case <-gctx.Done():
			case <-time.After(c.gcPause):
			}
		}
	}()
	with, withFailed, err2 := gcPushes(ctx, cl.followers, c.gcWorkers, layer, c.gcDuration, "withgc")
	stop()
	<-done
	logf("gc: %d images pushed in %v with %d collections (%d failed; first: %v)", with, c.gcDuration, len(runs), withFailed, err2)
	// The load alone again: the two phases without bracket the one with,
	// so the table shows how much the machine itself drifted.
	after, afterFailed, err3 := gcPushes(ctx, cl.followers, c.gcWorkers, layer, c.gcDuration, "after")
	logf("gc: %d images pushed in %v without a collection, after (%d failed)", after, c.gcDuration, afterFailed)
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("gc: %w", err)
	}
	if alone == 0 || with == 0 || after == 0 {
		err2 = errors.Join(err2, err3)
		return "", fmt.Errorf("gc: a phase pushed nothing: %v %v", err1, err2)
	}
	if runErr != nil {
		return "", fmt.Errorf("gc: a collection failed: %w", runErr)
	}
	var blobs int
	var freed int64
	for _, r := range runs {
		blobs += r.Blobs
		for _, n := range r.Nodes {
			freed += n.Bytes + n.LeftoverBytes
		}
	}
	var b strings.Builder
	b.WriteString("| metric (3-node meshreg cluster, garbage collection) | value |\n| --- | ---: |\n")
	row := func(label, format string, v float64) { fmt.Fprintf(&b, "| %s | "+format+" |\n", label, v) }
	secs := c.gcDuration.Seconds()
	row(fmt.Sprintf("images pushed and deleted per second, %d workers, no collection (before)", c.gcWorkers), "%.1f", float64(alone)/secs)
	row(fmt.Sprintf("images pushed and deleted per second, %d workers, a collection every %v on the leader", c.gcWorkers, c.gcPause), "%.1f", float64(with)/secs)
	row(fmt.Sprintf("images pushed and deleted per second, %d workers, no collection (after)", c.gcWorkers), "%.1f", float64(after)/secs)
	row("push throughput with collections ÷ the mean without, %", "%.0f", 200*float64(with)/float64(alone+after))
	row("collections during the load", "%.0f", float64(len(runs)))
	row("collection time (mark, sweep batches, every node's report), p50, ms", "%.0f", percentile(took, 50))
	row("blobs unlinked by the collections", "%.0f", float64(blobs))
	row("bytes freed on the nodes' disks, MiB", "%.1f", float64(freed)/(1<<20))
	fmt.Fprintf(&b, "\n%s; %d CPUs; %s; %d meshreg processes on loopback; an image is a unique config and a unique %s layer pushed through a follower, then deleted; collections with --grace %s. %d + %d + %d pushes failed.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), clusterSize, c.gcLayerSize, grace, aloneFailed, withFailed, afterFailed)
	b.WriteString(commandLine())
	return b.String(), nil
}
