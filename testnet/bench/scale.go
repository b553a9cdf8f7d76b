package main

// The scale benchmark (-scale, off by default): what a cluster costs as it
// grows, every node a `meshreg serve` process on this machine. Processes,
// not in-process nodes: the kernel then counts each node's CPU time, RSS
// and bytes written apart (/proc/PID/stat, status, io), which one Go
// process holding every node cannot; a process node also costs about as
// much memory as an in-process one (see the README's Scale section).
//
// For each size N of -scale-sizes, in order:
//
//  1. start N nodes, all joining through node 1 with --voters 3, and wait
//     until every node names the same leader, N members and 3 voters;
//  2. idle for -scale-idle: per node, CPU time (user+system) and bytes
//     written (wchar: sockets, mostly libp2p, plus the odd log line or
//     store write) over that window, and RSS at its end. Reported: the
//     leader's CPU (% of one core) and bytes/s, the mean and max over all
//     nodes;
//  3. optionally (-scale-profile-size N) 10 s CPU profiles of the leader
//     and one follower, still idle, saved under -scale-profile-dir;
//  4. -scale-writes sequential tag writes through the last node; after
//     each PUT returns every node is polled until it serves the tag: the
//     time to the last node's first good answer (p50, p99);
//  5. a fan-out: an image of one fresh -scale-image-size layer pushed to
//     node 1, then pulled through every other node at once (-scale-pullers
//     at a time); node 1's peer egress during the pulls ÷ the image size (in parentheses: from before the push, which copies it to --replicas nodes).
//
// Every step is bounded in time (the cluster's start, each write's
// visibility, each GET); the sizes run one after the other and each
// cluster is stopped before the next starts.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshreg/meshreg/testnet"
	"github.com/opencontainers/go-digest"
)

// scaleResult is one size's row, also written as JSON.
type scaleResult struct {
	Nodes              int     `json:"nodes"`
	StartSeconds       float64 `json:"start_seconds"`
	IdleSeconds        float64 `json:"idle_seconds"`
	LeaderCPUPercent   float64 `json:"leader_cpu_percent"`
	LeaderWriteBps     float64 `json:"leader_written_bytes_per_second"`
	MeanCPUPercent     float64 `json:"mean_cpu_percent"`
	MaxCPUPercent      float64 `json:"max_cpu_percent"`
	MeanWriteBps       float64 `json:"mean_written_bytes_per_second"`
	MeanRSSMiB         float64 `json:"mean_rss_mib"`
	MaxRSSMiB          float64 `json:"max_rss_mib"`
	TotalCPUPercent    float64 `json:"total_cpu_percent"`
	VisibleP50ms       float64 `json:"visible_all_p50_ms"`
	VisibleP99ms       float64 `json:"visible_all_p99_ms"`
	Writes             int     `json:"writes"`
	FanoutImageBytes   int64   `json:"fanout_image_bytes"`
	FanoutSeconds      float64 `json:"fanout_seconds"`
	PusherEgressImages float64 `json:"pusher_egress_images"`
	// PusherEgressAll counts the push's replica copies too.
	PusherEgressAll float64 `json:"pusher_egress_images_with_push"`
	// FanoutServedByRole is every node's peer egress during the pulls ÷
	// the image size, summed by role ("pusher", then the status role of
	// the others: "leader", "voter", "non-voter", "follower"): where the
	// copies came from.
	FanoutServedByRole map[string]float64 `json:"fanout_served_by_role,omitempty"`
	Notes              []string           `json:"notes,omitempty"`
	// Failed is why this size stopped early ("" if it ran to the end);
	// the figures measured before are kept.
	Failed string `json:"failed,omitempty"`
}

// procSample is one reading of a node process's counters.
type procSample struct {
	cpu     time.Duration // user+system
	written int64         // /proc/PID/io wchar
	rss     int64         // bytes
}

func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 22 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	rssPages, err3 := strconv.ParseInt(f[21], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	s.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	s.rss = rssPages * int64(os.Getpagesize())
	io, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(io), "\n") {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			s.written, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return s, nil
}

func readProcs(nodes []*server) ([]procSample, error) {
	out := make([]procSample, len(nodes))
	for i, s := range nodes {
		p, err := readProc(s.proc.PID())
		if err != nil {
			return nil, s.failed(err)
		}
		out[i] = p
	}
	return out, nil
}

// parseSizes reads -scale-sizes: a comma-separated list of cluster sizes.
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > maxScaleSize {
			return nil, fmt.Errorf("-scale-sizes %q: want sizes from 1 to %d, comma-separated", s, maxScaleSize)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// maxScaleSize bounds -scale-sizes: each node is a process with its own
// ports, data dir and some 40 MiB of memory.
const maxScaleSize = 300

func runScale(ctx context.Context, c config, bin, dir string) (string, error) {
	sizes, err := parseSizes(c.scaleSizes)
	if err != nil {
		return "", err
	}
	var rows []scaleResult
	for _, n := range sizes {
		r, err := scaleOne(ctx, c, bin, filepath.Join(dir, fmt.Sprintf("n%d", n)), n)
		if err != nil {
			// Keep what was measured: on a small machine the largest
			// sizes may not hold together, and that is a result too.
			r.Failed = err.Error()
			if i := strings.IndexByte(r.Failed, '\n'); i > 0 {
				r.Failed = r.Failed[:i]
			}
			logf("scale, %d nodes: %v", n, err)
		}
		rows = append(rows, r)
		logf("scale %d nodes: %+v", n, r)
		if err != nil {
			break // a larger cluster would fare no better
		}
	}
	if c.scaleJSON != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(c.scaleJSON, append(b, '\n'), 0o644); err != nil {
			return "", err
		}
	}
	return scaleTable(c, rows), nil
}

func scaleOne(ctx context.Context, c config, bin, dir string, n int) (scaleResult, error) {
	r := scaleResult{Nodes: n}
	start := time.Now()
	// Starting a node takes well under a second; joining waits for the
	// leader to add it. 2 s a node is ample even on a loaded machine.
	cl, err := startClusterWithin(ctx, bin, dir, n, 60*time.Second+time.Duration(n)*2*time.Second, scalePprof(c, n), "--voters", "3")
	if err != nil {
		return r, err
	}
	defer cl.stop()
	r.StartSeconds = time.Since(start).Seconds()
	logf("scale: %d nodes converged in %.1f s, leader %s", n, r.StartSeconds, cl.leader.name)

	// Idle.
	before, err := readProcs(cl.nodes)
	if err != nil {
		return r, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(c.scaleIdle):
	}
	after, err := readProcs(cl.nodes)
	if err != nil {
		return r, err
	}
	idle := time.Since(t0).Seconds()
	r.IdleSeconds = idle
	if st, err := nodeStatus(ctx, cl.leader); err != nil || st.Raft.State != "Leader" {
		r.Notes = append(r.Notes, fmt.Sprintf("%s no longer led at the end of the idle window (%v): the figures include an election", cl.leader.name, err))
	}
	var sumCPU, sumW, sumRSS float64
	for i, s := range cl.nodes {
		cpu := (after[i].cpu - before[i].cpu).Seconds() / idle * 100
		w := float64(after[i].written-before[i].written) / idle
		rss := float64(after[i].rss) / mib
		sumCPU, sumW, sumRSS = sumCPU+cpu, sumW+w, sumRSS+rss
		r.MaxCPUPercent = max(r.MaxCPUPercent, cpu)
		r.MaxRSSMiB = max(r.MaxRSSMiB, rss)
		if s == cl.leader {
			r.LeaderCPUPercent, r.LeaderWriteBps = cpu, w
		}
	}
	r.TotalCPUPercent = sumCPU
	r.MeanCPUPercent, r.MeanWriteBps, r.MeanRSSMiB = sumCPU/float64(n), sumW/float64(n), sumRSS/float64(n)

	if c.scaleProfileSize == n && len(cl.followers) > 0 {
		if err := profileIdle(ctx, c, cl); err != nil {
			r.Notes = append(r.Notes, "profiles: "+err.Error())
		}
	}

	// Tag visibility on all nodes. A manifest PUT needs its config blob in
	// the repository (a cluster-wide link), so one push through via does.
	via := cl.nodes[len(cl.nodes)-1]
	w := &tagWriter{size: int64(len(clusterConfigBlob)), acked: map[string]digest.Digest{}}
	if err := retried(ctx, &r, "push of the config blob", func() (err error) {
		w.config, err = via.client.PushBytes(ctx, clusterRepo, []byte(clusterConfigBlob))
		return err
	}); err != nil {
		return r, via.failed(err)
	}
	var vis []float64
	for i := range c.scaleWrites {
		tag := fmt.Sprintf("scale%d-%d", n, i)
		var d digest.Digest
		if err := retried(ctx, &r, "tag write "+tag, func() (err error) {
			d, _, err = w.write(ctx, via, tag)
			return err
		}); err != nil {
			return r, via.failed(err)
		}
		since := time.Now()
		took, err := visibleOnAll(ctx, cl.nodes, tag, d, since)
		if err != nil {
			return r, err
		}
		vis = append(vis, ms(took))
	}
	r.Writes = len(vis)
	r.VisibleP50ms, r.VisibleP99ms = percentile(vis, 50), percentile(vis, 99)

	// Fan-out of a fresh image to every node.
	if n > 1 {
		if err := scaleFanout(ctx, c, cl, &r); err != nil {
			return r, err
		}
	}
	return r, nil
}

// retried runs f up to scaleTries times, a second apart, and notes each
// failure in r: on a loaded machine a large cluster may lose its leader for
// a moment (a 503 that a client retries).
func retried(ctx context.Context, r *scaleResult, what string, f func() error) error {
	var err error
	for try := 1; try <= scaleTries; try++ {
		if err = f(); err == nil {
			return nil
		}
		r.Notes = append(r.Notes, fmt.Sprintf("%s failed (try %d of %d): %.300s", what, try, scaleTries, err))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return err
}

const scaleTries = 3

// scalePprof gives the nodes --pprof-listen when their size is profiled.
func scalePprof(c config, n int) func(i int) ([]string, error) {
	if c.scaleProfileSize != n {
		return nil
	}
	return func(int) ([]string, error) {
		addr, err := testnet.FreeAddr()
		if err != nil {
			return nil, err
		}
		return []string{"--pprof-listen", addr}, nil
	}
}

// profileIdle saves a CPU profile of the leader and of one follower, taken
// at the same time over -scale-profile-seconds, under -scale-profile-dir.
func profileIdle(ctx context.Context, c config, cl *cluster) error {
	if err := os.MkdirAll(c.scaleProfileDir, 0o755); err != nil {
		return err
	}
	targets := map[string]*server{"leader": cl.leader, "follower": cl.followers[len(cl.followers)-1]}
	var wg sync.WaitGroup
	errs := make(chan error, len(targets))
	for role, s := range targets {
		wg.Go(func() {
			path := filepath.Join(c.scaleProfileDir, fmt.Sprintf("cpu-%d-%s.pprof", len(cl.nodes), role))
			if err := fetchProfile(ctx, s, c.scaleProfileSeconds, path); err != nil {
				errs <- fmt.Errorf("%s (%s): %w", role, s.name, err)
				return
			}
			logf("scale: CPU profile of the %s (%s) over %d s idle: %s", role, s.name, c.scaleProfileSeconds, path)
		})
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

func fetchProfile(ctx context.Context, s *server, seconds int, path string) error {
	addr := s.pprof
	if addr == "" {
		return errors.New("no --pprof-listen")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(seconds)*time.Second+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// visibleOnAll polls every node until each serves tag as d, and returns
// the time from since to the last node's first good answer.
func visibleOnAll(ctx context.Context, nodes []*server, tag string, d digest.Digest, since time.Time) (time.Duration, error) {
	tooks := make([]time.Duration, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, s := range nodes {
		wg.Go(func() { tooks[i], _, errs[i] = visible(ctx, s, tag, d, since, scalePoll) })
	}
	wg.Wait()
	var worst time.Duration
	for i := range nodes {
		if errs[i] != nil {
			return 0, errs[i]
		}
		worst = max(worst, tooks[i])
	}
	return worst, nil
}

// scalePoll is how often each node is polled for a write; with 100 nodes
// polled at once, 2 ms keeps the pollers from starving the nodes of CPU.
const scalePoll = 2 * time.Millisecond

// scaleFanout pushes a fresh one-layer image to node 1, waits until every
// other node has its metadata, then pulls it through all of them at once
// (at most -scale-pullers at a time) and records node 1's peer egress
// during the pulls ÷ the image size.
func scaleFanout(ctx context.Context, c config, cl *cluster, r *scaleResult) error {
	pusher := cl.nodes[0]
	img := newImage(fmt.Sprintf("scale-%d", len(cl.nodes)), 1, int64(c.scaleImageSize), 5, len(cl.nodes))
	c0, err := readCounters(ctx, pusher)
	if err != nil {
		return err
	}
	if err := img.push(ctx, c, pusher); err != nil {
		return err
	}
	var lw linkWaits
	for _, s := range cl.nodes[1:] {
		for _, b := range img.blobs() {
			if err := lw.wait(ctx, s, img.repository(), b.Digest); err != nil {
				return err
			}
		}
	}
	before, err := readCounters(ctx, pusher)
	if err != nil {
		return err
	}
	roles, servedBefore := rolesAndServed(ctx, cl.nodes)
	sem := make(chan struct{}, c.scalePullers)
	errs := make([]error, len(cl.nodes))
	var wg sync.WaitGroup
	start := time.Now()
	for i, s := range cl.nodes[1:] {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			hc := newPeerHTTP()
			defer hc.CloseIdleConnections()
			_, errs[i] = img.pullBlobs(ctx, c, hc, s)
		})
	}
	wg.Wait()
	r.FanoutSeconds = time.Since(start).Seconds()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("fan-out: %w", err)
	}
	after, err := readCounters(ctx, pusher)
	if err != nil {
		return err
	}
	r.FanoutImageBytes = img.size
	r.PusherEgressImages = (after.served - before.served) / float64(img.size)
	r.PusherEgressAll = (after.served - c0.served) / float64(img.size)
	_, servedAfter := rolesAndServed(ctx, cl.nodes)
	r.FanoutServedByRole = map[string]float64{}
	for i := range cl.nodes {
		role := roles[i]
		if i == 0 {
			role = "pusher"
		}
		if servedBefore[i] < 0 || servedAfter[i] < 0 {
			role = "unknown (metrics unread)"
		}
		r.FanoutServedByRole[role] += (servedAfter[i] - servedBefore[i]) / float64(img.size)
	}
	keys := slices.Sorted(maps.Keys(r.FanoutServedByRole))
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.2f×", k, r.FanoutServedByRole[k]))
	}
	r.Notes = append(r.Notes, "fan-out: peer egress during the pulls ÷ image, by role: "+strings.Join(parts, ", "))
	return nil
}

// rolesAndServed reads each node's role (its status) and peer egress
// counter, in parallel; a node whose counter cannot be read gets -1.
func rolesAndServed(ctx context.Context, nodes []*server) ([]string, []float64) {
	roles := make([]string, len(nodes))
	served := make([]float64, len(nodes))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, s := range nodes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			roles[i] = "?"
			if st, err := nodeStatus(ctx, s); err == nil {
				roles[i] = st.Role
			}
			served[i] = -1
			if c, err := readCounters(ctx, s); err == nil {
				served[i] = c.served
			}
		})
	}
	wg.Wait()
	return roles, served
}

func scaleTable(c config, rows []scaleResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| nodes | leader idle CPU | leader bytes written/s | mean / max idle CPU per node | all nodes' idle CPU | mean / max RSS | tag visible on all, p50 / p99 | fan-out of %s: time, pusher egress ÷ image (with the push's replica copy) |\n", c.scaleImageSize)
	b.WriteString("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %.1f%% | %.1f KB/s | %.2f%% / %.1f%% | %.0f%% | %.0f / %.0f MiB | %.1f / %.1f ms | %.1f s, %.2f× (%.2f×) |\n",
			r.Nodes, r.LeaderCPUPercent, r.LeaderWriteBps/1e3, r.MeanCPUPercent, r.MaxCPUPercent, r.TotalCPUPercent,
			r.MeanRSSMiB, r.MaxRSSMiB, r.VisibleP50ms, r.VisibleP99ms, r.FanoutSeconds, r.PusherEgressImages, r.PusherEgressAll)
	}
	fmt.Fprintf(&b, "\nEvery node a `meshreg serve` process on this machine (%s), all joined through node 1 with --voters 3. "+
		"Idle CPU (%% of one core) and bytes written (/proc/PID/io wchar: libp2p sockets, plus any log or store write) over %v idle after the cluster converged; RSS at its end. "+
		"Tag visibility: %d sequential writes through the last node, every node polled every %v after each PUT returned; the time to the last node's first good answer. "+
		"Fan-out: a fresh one-layer image pushed to node 1, then pulled through every other node at once (%d at a time); node 1's peer egress during the pulls ÷ the image size (in parentheses: from before the push, which copies it to --replicas nodes).\n",
		fmt.Sprintf("%d CPUs, %s", runtime.NumCPU(), runtime.Version()), c.scaleIdle, c.scaleWrites, scalePoll, c.scalePullers)
	for _, r := range rows {
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "\n%d nodes: %s\n", r.Nodes, n)
		}
		if r.Failed != "" {
			fmt.Fprintf(&b, "\n%d nodes: stopped early (figures after that point are missing): %s\n", r.Nodes, r.Failed)
		}
	}
	return b.String()
}
