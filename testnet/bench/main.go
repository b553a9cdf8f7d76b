// Command bench measures meshreg and CNCF Distribution v3 side by side, in
// one run, on loopback, and prints a Markdown table with their ratios.
//
// It installs nothing: `make bench` builds bin/meshreg and installs
// Distribution's `registry` into .tools/bin, then runs
//
//	go run ./testnet/bench -meshreg bin/meshreg -distribution .tools/bin/registry
//
// Both servers run at once, each with its own empty data dir. Every metric
// is measured on both, alternating which goes first, -runs times, and the
// median is reported:
//
//   - push and pull of one -blob-size blob (MB/s; the pushed bytes are
//     generated while they are sent, never held in memory);
//   - push and pull of an image of -layers layers of -layer-size (seconds);
//   - manifest GET by tag and blob HEAD from -conns concurrent connections
//     for -duration each (requests/s);
//   - peak RSS of each server process (VmHWM).
//
// Then, unless -cluster=false, it starts a 3-node meshreg cluster and
// measures tag writes through followers and the time from a write's
// return to its visibility on the other nodes (see cluster.go), printed as
// a second table.
//
// Then, unless -mirror=false (or the binary has no --upstream), it
// measures meshreg as a pull-through mirror of an upstream registry (see
// mirror.go): upstream egress when 5 nodes pull one image at once, time
// against a direct pull, time to first byte of a cached blob from a peer.
//
// Then, unless -peers=false, it measures blob transfers between meshreg
// nodes over libp2p (see peers.go): a peer pull of a -peer-blob-size blob
// against the same blob from the holder's disk, the time to first byte of
// a -peer-ttfb-size blob fetched from a peer, and a fan-out of an image of
// -fanout-layers × -fanout-layer-size to 4 nodes of a 5-node cluster at
// once, with each node's peer egress; printed as a third table:
// `go run ./testnet/bench -peers` runs that section alone.
//
// Then, unless -access=false, it measures what TLS and authentication
// cost (see access.go): a pull of one -access-blob-size blob and manifest
// GETs by tag (-conns × -duration) on meshreg and Distribution, each plain
// and with TLS (a CA and certificate the benchmark makes) and htpasswd
// auth on (meshreg's clients send a bearer token from its token service,
// Distribution's Basic credentials), all four servers running at once;
// printed as a table of
// its own with meshreg's goal (TLS+auth at least 90% of plain for the blob,
// 80% for manifest GETs). `go run ./testnet/bench -access` runs that
// section alone. Giving -peers, -mirror or -access explicitly runs only
// the sections given explicitly.
//
// A quick run: -quick, short for -blob-size 64MiB -layers 5 -layer-size
// 1MiB -duration 1s -runs 1 -cluster-writes 100 -peer-blob-size 64MiB
// -peer-ttfb-size 8MiB -peer-ttfb-runs 3 -fanout-layer-size 8MiB
// -access-blob-size 64MiB (flags given explicitly win).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/meshreg/meshreg/internal/bytesize"
	"github.com/meshreg/meshreg/testnet"
)

type config struct {
	meshreg, distribution string
	blobSize, layerSize   byteSize
	layers, layerJobs     int
	duration              time.Duration
	conns, runs           int
	timeout               time.Duration
	keep                  bool
	out                   string

	cluster                       bool
	clusterWrites, clusterWorkers int
	clusterPoll, clusterMaxTime   time.Duration

	sideBySide                 bool // the meshreg/Distribution table; off when -peers is given alone
	peers                      bool
	peerBlobSize, peerTTFBSize byteSize
	peerTTFBRuns               int
	fanoutLayers               int
	fanoutLayerSize            byteSize
	peerGetTimeout             time.Duration

	mirror, mirrorGiven bool
	mirrorLayers        int
	mirrorLayerSize     byteSize

	access         bool
	accessBlobSize byteSize
	gc             bool
	gcDuration     time.Duration
	gcPause        time.Duration
	gcWorkers      int
	gcLayerSize    byteSize

	scale               bool
	scaleSizes          string
	scaleIdle           time.Duration
	scaleWrites         int
	scaleImageSize      byteSize
	scalePullers        int
	scaleJSON           string
	scaleProfileSize    int
	scaleProfileSeconds int
	scaleProfileDir     string
}

// quickFlags are the values -quick sets, unless the flag is given.
var quickFlags = map[string]string{
	"blob-size": "64MiB", "layers": "5", "layer-size": "1MiB", "duration": "1s", "runs": "1", "cluster-writes": "100",
	"peer-blob-size": "64MiB", "peer-ttfb-size": "8MiB", "peer-ttfb-runs": "3", "fanout-layer-size": "8MiB",
	"mirror-layer-size": "16MiB", "access-blob-size": "64MiB", "gc-duration": "3s",
}

func main() {
	var c config
	c.blobSize, c.layerSize = 512<<20, 8<<20
	c.peerBlobSize, c.peerTTFBSize, c.fanoutLayerSize = 512<<20, 64<<20, 64<<20
	c.mirrorLayerSize = 64 << 20
	c.accessBlobSize = 256 << 20
	flag.StringVar(&c.meshreg, "meshreg", "bin/meshreg", "meshreg binary (make build)")
	flag.StringVar(&c.distribution, "distribution", "", "CNCF Distribution `registry` binary (default: from PATH, else .tools/bin/registry)")
	flag.Var(&c.blobSize, "blob-size", "size of the single blob pushed and pulled")
	flag.IntVar(&c.layers, "layers", 20, "layers of the image pushed and pulled")
	flag.Var(&c.layerSize, "layer-size", "size of each image layer")
	flag.IntVar(&c.layerJobs, "layer-jobs", 4, "layers transferred at once during image push and pull")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "how long each requests/s measurement runs")
	flag.IntVar(&c.conns, "conns", 32, "concurrent connections for the requests/s measurements")
	flag.IntVar(&c.runs, "runs", 3, "measurements of each metric per server (the median is reported)")
	flag.DurationVar(&c.timeout, "timeout", 20*time.Minute, "give up after this long")
	flag.BoolVar(&c.keep, "keep", false, "keep the servers' data dirs and logs")
	flag.StringVar(&c.out, "out", "", "also write the Markdown tables to this file")
	flag.BoolVar(&c.cluster, "cluster", true, "also benchmark tag writes and their visibility on a 3-node meshreg cluster")
	flag.IntVar(&c.clusterWrites, "cluster-writes", 500, "tag writes in each cluster measurement (sequential, concurrent, visibility)")
	flag.IntVar(&c.clusterWorkers, "cluster-workers", 16, "concurrent writers in the concurrent cluster measurement")
	flag.DurationVar(&c.clusterPoll, "cluster-poll", time.Millisecond, "how often the other nodes are polled for a write's visibility")
	flag.DurationVar(&c.clusterMaxTime, "cluster-max-time", 60*time.Second, "stop each cluster measurement after this long, even short of -cluster-writes")
	flag.BoolVar(&c.peers, "peers", true, "also benchmark blob transfers between meshreg nodes (peer pull, time to first byte, fan-out to a 5-node cluster); given explicitly, run only this section (and -cluster if given explicitly too)")
	flag.Var(&c.peerBlobSize, "peer-blob-size", "size of the blob pulled through a node that fetches it from a peer")
	flag.Var(&c.peerTTFBSize, "peer-ttfb-size", "size of each blob whose time to first byte from a peer is measured")
	flag.IntVar(&c.peerTTFBRuns, "peer-ttfb-runs", 9, "time-to-first-byte measurements (a fresh blob each; p50 reported)")
	flag.IntVar(&c.fanoutLayers, "fanout-layers", 4, "layers of the image pulled by 4 nodes at once in the fan-out measurement")
	flag.Var(&c.fanoutLayerSize, "fanout-layer-size", "size of each layer of the fan-out image")
	flag.DurationVar(&c.peerGetTimeout, "peer-get-timeout", 5*time.Minute, "give up on one blob GET or push in the peer section after this long")
	flag.BoolVar(&c.mirror, "mirror", true, "also benchmark meshreg as a pull-through mirror: 5 nodes pull a fresh image from an upstream (CNCF Distribution) at once; upstream egress ÷ image size, time against one direct pull, time to first byte of a cached blob from a peer (skipped when the meshreg binary has no --upstream); given explicitly, run only this section (and the others given explicitly)")
	flag.IntVar(&c.mirrorLayers, "mirror-layers", 4, "layers of the image pulled through the mirror")
	flag.Var(&c.mirrorLayerSize, "mirror-layer-size", "size of each layer of the mirrored image (4 × 64MiB: 256 MiB)")
	flag.BoolVar(&c.access, "access", true, "also benchmark TLS and htpasswd auth: a blob pull and manifest GETs on meshreg and Distribution, each plain and with TLS and htpasswd auth on; given explicitly, run only this section (and the others given explicitly)")
	flag.Var(&c.accessBlobSize, "access-blob-size", "size of the blob pulled in the access section")
	c.gcLayerSize = 64 << 10
	flag.BoolVar(&c.gc, "gc", true, "also benchmark push throughput on a 3-node cluster with garbage collections running back to back against without")
	flag.DurationVar(&c.gcDuration, "gc-duration", 10*time.Second, "how long each phase of the garbage collection benchmark pushes")
	flag.DurationVar(&c.gcPause, "gc-pause", time.Second, "pause between two collections while the load runs (0: back to back)")
	flag.IntVar(&c.gcWorkers, "gc-workers", 4, "concurrent pushers in the garbage collection benchmark")
	flag.Var(&c.gcLayerSize, "gc-layer-size", "size of each image's layer in the garbage collection benchmark")
	c.scaleImageSize = 16 << 20
	flag.BoolVar(&c.scale, "scale", false, "benchmark idle cost, tag visibility and fan-out as the cluster grows (-scale-sizes nodes, each a process); off by default; given, run only this section (and the others given explicitly)")
	flag.StringVar(&c.scaleSizes, "scale-sizes", "3,25", "cluster `SIZES` of the scale section, comma-separated (e.g. 3,25,50,100)")
	flag.DurationVar(&c.scaleIdle, "scale-idle", 10*time.Second, "idle window over which the scale section measures CPU and bytes written")
	flag.IntVar(&c.scaleWrites, "scale-writes", 20, "tag writes whose visibility on all nodes the scale section measures")
	flag.Var(&c.scaleImageSize, "scale-image-size", "size of the one-layer image fanned out to every node in the scale section")
	flag.IntVar(&c.scalePullers, "scale-pullers", 100, "nodes pulling at once in the scale section's fan-out")
	flag.StringVar(&c.scaleJSON, "scale-json", "", "also write the scale section's results as JSON to this `FILE`")
	flag.IntVar(&c.scaleProfileSize, "scale-profile-size", 0, "at this cluster size, take CPU profiles of the leader and a follower while idle (0: none)")
	flag.IntVar(&c.scaleProfileSeconds, "scale-profile-seconds", 10, "length of each idle CPU profile")
	flag.StringVar(&c.scaleProfileDir, "scale-profile-dir", "scale-profiles", "`DIR` the idle CPU profiles are written to")
	quick := flag.Bool("quick", false, "a quick run: "+quickSummary())
	flag.Parse()
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	c.selectSections(given)
	if *quick {
		for name, v := range quickFlags {
			if !given[name] {
				if err := flag.Set(name, v); err != nil {
					panic(err)
				}
			}
		}
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// selectSections decides which sections run, given the flags set
// explicitly: all of them (but those turned off), or, when -peers,
// -mirror or -access is given, only the ones given.
func (c *config) selectSections(given map[string]bool) {
	c.sideBySide = true
	c.mirrorGiven = given["mirror"]
	if given["peers"] && c.peers || given["mirror"] && c.mirror || given["access"] && c.access || given["gc"] && c.gc || given["scale"] && c.scale {
		c.sideBySide = false
		c.cluster = c.cluster && given["cluster"]
		c.peers = c.peers && given["peers"]
		c.mirror = c.mirror && given["mirror"]
		c.access = c.access && given["access"]
		c.gc = c.gc && given["gc"]
		c.scale = c.scale && given["scale"]
	}
}

func quickSummary() string {
	var parts []string
	for name, v := range quickFlags {
		parts = append(parts, "-"+name+" "+v)
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func run(c config) error {
	if c.runs < 1 || c.layers < 1 || c.conns < 1 || c.layerJobs < 1 || c.blobSize < 1 || c.layerSize < 1 {
		return errors.New("sizes, counts and -runs must be positive")
	}
	if c.peers && (c.peerBlobSize < 1 || c.peerTTFBSize < 1 || c.peerTTFBRuns < 1 || c.fanoutLayers < 1 || c.fanoutLayerSize < 1 || c.peerGetTimeout <= 0) {
		return errors.New("-peer-blob-size, -peer-ttfb-size, -peer-ttfb-runs, -fanout-layers, -fanout-layer-size and -peer-get-timeout must be positive")
	}
	if c.cluster && (c.clusterWrites < 1 || c.clusterWorkers < 1 || c.clusterPoll <= 0 || c.clusterMaxTime <= 0) {
		return errors.New("-cluster-writes, -cluster-workers, -cluster-poll and -cluster-max-time must be positive")
	}
	if c.mirror && (c.mirrorLayers < 1 || c.mirrorLayerSize < 1 || c.peerTTFBSize < 1 || c.peerTTFBRuns < 1 || c.peerGetTimeout <= 0) {
		return errors.New("-mirror-layers, -mirror-layer-size, -peer-ttfb-size, -peer-ttfb-runs and -peer-get-timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()

	meshregBin, err := filepath.Abs(c.meshreg)
	if err != nil {
		return err
	}
	if _, err := os.Stat(meshregBin); err != nil {
		return fmt.Errorf("meshreg binary: %w (run `make build`)", err)
	}
	if c.access && c.accessBlobSize < 1 {
		return errors.New("-access-blob-size must be positive")
	}
	if c.mirror && !supportsUpstream(meshregBin) {
		if c.mirrorGiven {
			return fmt.Errorf("-mirror: %s has no --upstream (build a meshreg with the mirror)", meshregBin)
		}
		logf("mirror section skipped: %s has no --upstream", meshregBin)
		c.mirror = false
	}
	var distBin string
	if c.sideBySide || c.mirror || c.access {
		if distBin, err = findDistribution(c.distribution); err != nil {
			return err
		}
	}

	root, err := os.MkdirTemp("", "meshreg-bench-")
	if err != nil {
		return err
	}
	defer func() {
		if c.keep {
			fmt.Fprintf(os.Stderr, "kept %s\n", root)
		} else {
			os.RemoveAll(root)
		}
	}()

	var tables []string
	add := func(t string) {
		if len(tables) > 0 {
			fmt.Println()
		}
		fmt.Print(t)
		tables = append(tables, t)
	}
	if c.sideBySide {
		t, err := sideBySide(ctx, c, meshregBin, distBin, root)
		if err != nil {
			return err
		}
		add(t)
	}
	if c.cluster {
		t, err := runCluster(ctx, c, meshregBin, filepath.Join(root, "cluster"))
		if err != nil {
			return err
		}
		add(t)
	}
	if c.peers {
		t, err := runPeers(ctx, c, meshregBin, filepath.Join(root, "peers"))
		if err != nil {
			return err
		}
		add(t)
	}
	if c.gc {
		if c.gcDuration <= 0 || c.gcWorkers < 1 || c.gcLayerSize < 1 || c.gcPause < 0 {
			return errors.New("-gc-duration, -gc-workers and -gc-layer-size must be positive, -gc-pause not negative")
		}
		t, err := runGC(ctx, c, meshregBin, filepath.Join(root, "gc"))
		if err != nil {
			return err
		}
		add(t)
	}
	if c.scale {
		if c.scaleIdle <= 0 || c.scaleWrites < 1 || c.scaleImageSize < 1 || c.scalePullers < 1 || c.scaleProfileSeconds < 1 || c.scaleProfileSeconds > 60 {
			return errors.New("-scale-idle, -scale-writes, -scale-image-size and -scale-pullers must be positive, -scale-profile-seconds from 1 to 60")
		}
		t, err := runScale(ctx, c, meshregBin, filepath.Join(root, "scale"))
		if err != nil {
			return err
		}
		add(t)
	}
	if c.mirror {
		t, err := runMirror(ctx, c, meshregBin, distBin, filepath.Join(root, "mirror"))
		if err != nil {
			return err
		}
		add(t)
	}
	if c.access {
		t, err := runAccess(ctx, c, meshregBin, distBin, filepath.Join(root, "access"))
		if err != nil {
			return err
		}
		add(t)
	}
	table := strings.Join(tables, "\n")
	if c.out != "" {
		return os.WriteFile(c.out, []byte(table), 0o644)
	}
	return nil
}

// sideBySide measures meshreg and Distribution, one server each under
// root, and returns the table. Both servers are stopped when it returns.
func sideBySide(ctx context.Context, c config, meshregBin, distBin, root string) (string, error) {
	mesh, err := startMeshreg(ctx, meshregBin, filepath.Join(root, "meshreg"))
	if err != nil {
		return "", err
	}
	defer mesh.stop()
	dist, err := startDistribution(ctx, distBin, filepath.Join(root, "distribution"))
	if err != nil {
		return "", err
	}
	defer dist.stop()
	servers := []*server{mesh, dist}

	logf("meshreg %s (pid %d) and %s (pid %d); %d CPUs, %s", mesh.addr, mesh.proc.PID(), dist.version, dist.proc.PID(), runtime.NumCPU(), runtime.Version())
	logf("blob %s; image %d × %s; %d conns × %v; %d runs", c.blobSize, c.layers, c.layerSize, c.conns, c.duration, c.runs)

	res := newResults(servers)
	for run := range c.runs {
		order := servers
		if run%2 == 1 {
			order = []*server{dist, mesh}
		}
		w := newWorkload(c, run)
		for _, m := range metrics {
			for _, s := range order {
				v, note, err := m.measure(ctx, s, w)
				if err != nil {
					return "", fmt.Errorf("run %d, %s, %s: %w", run+1, m.name, s.name, err)
				}
				res.add(m.name, s, v, note)
				logf("run %d  %-28s %-13s %10.2f %s %s", run+1, m.name, s.name, v, m.unit, note)
			}
		}
	}
	// Correctness, untimed: each server serves back what it was given.
	w := newWorkload(c, c.runs-1)
	for _, s := range servers {
		if err := w.verify(ctx, s); err != nil {
			return "", fmt.Errorf("%s served wrong content: %w", s.name, err)
		}
		rss, err := testnet.PeakRSS(s.proc.PID())
		if err != nil {
			return "", err
		}
		res.add("peak RSS", s, float64(rss)/(1<<20), "")
	}

	return res.table(c, mesh, dist), nil
}

func findDistribution(flagPath string) (string, error) {
	if flagPath != "" {
		return filepath.Abs(flagPath)
	}
	if p, err := exec.LookPath("registry"); err == nil {
		return p, nil
	}
	if root, err := testnet.ModuleRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", "registry")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("CNCF Distribution's registry binary not found: pass -distribution or run `make bench`, which installs it into .tools/bin")
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

// byteSize is a flag value like 512MiB, 8MiB, 64KiB, 1GiB or a plain count.
type byteSize int64

func (b byteSize) String() string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return fmt.Sprintf("%dB", int64(b))
}

func (b *byteSize) Set(s string) error {
	n, err := bytesize.Parse(s)
	if err != nil {
		return fmt.Errorf("bad size %q: want e.g. 512MiB", s)
	}
	*b = byteSize(n)
	return nil
}
