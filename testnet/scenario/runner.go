package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/containers"
)

// Options are what a run needs besides the scenario.
type Options struct {
	Image  string       // the node image, built already (see BuildImage)
	OutDir string       // report.json, report.md and node logs go to OutDir/<scenario>
	Keep   bool         // leave containers and network for debugging
	Log    *slog.Logger // progress; nil discards
	// PreviousImage is the image of the scenario's previous revision
	// (see BuildRevisionImage), needed when it names one: the nodes start
	// with it and "upgrade" events move them to Image.
	PreviousImage string
}

// BuildImage builds the node image once for any number of runs.
func BuildImage(ctx context.Context, tag string) error { return testnet.BuildImage(ctx, tag) }

// BuildRevisionImage builds the node image of git revision rev (a
// scenario's previous) as tag.
func BuildRevisionImage(ctx context.Context, rev, tag string) error {
	return testnet.BuildRevisionImage(ctx, rev, tag)
}

// PreviousImageTag is the tag the testnet command and the tests give the
// image of revision rev.
func PreviousImageTag(rev string) string { return "meshreg-testnet:prev-" + rev[:min(12, len(rev))] }

// run is the state of one scenario run; its stages are methods.
type run struct {
	s     *Scenario
	opt   Options
	log   *slog.Logger
	d     *containers.Docker
	net   *containers.Network
	cl    *cluster
	rep   *Report
	hist  *history
	obs   *observer
	began time.Time
	// loadStart is when workload and events began: event times count
	// from it.
	loadStart time.Time
	seedMu    sync.Mutex
	seed      uint64
	outDir    string
	netMu     sync.Mutex // serialises applyNetwork
	repMu     sync.Mutex // guards rep.Events, rep.Docker, rep.Notes, rep.Measured
	measure   map[string]map[string]float64
	done      map[string]time.Time // label → when the event was carried out
	// preUpgrade are the pushes acknowledged before the first upgrade.
	preUpgrade []pushed
	// watchers are the convergence measures started by events.
	watchers sync.WaitGroup
}

// Run runs one scenario from start to report. The report says whether
// every check passed; the error is for a run that could not be carried
// out at all (no Docker, the cluster never formed), and is recorded in
// the report as a failure too.
func Run(ctx context.Context, s *Scenario, opt Options) (*Report, error) {
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &run{s: s, opt: opt, log: log.With("scenario", s.Name), cl: newCluster(s.Nodes),
		hist: newHistory(), began: time.Now(), seed: uint64(time.Now().UnixNano()),
		measure: map[string]map[string]float64{}, done: map[string]time.Time{}}
	r.rep = &Report{Scenario: s.Name, Started: r.began.UTC(), RunID: testnet.RandomHex(4)}
	r.outDir = filepath.Join(opt.OutDir, s.Name)
	if err := os.MkdirAll(filepath.Join(r.outDir, "logs"), 0o755); err != nil {
		return r.rep, fmt.Errorf("scenario: output directory: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, s.Timeout.Duration)
	defer cancel()
	err := r.stages(ctx)
	if err != nil {
		r.rep.fail("run: %v", err)
	}
	r.rep.Duration = time.Since(r.began).Round(time.Millisecond).String()
	r.rep.Passed = len(r.rep.Failures) == 0
	if werr := r.rep.write(r.outDir); werr != nil {
		err = errors.Join(err, werr)
	}
	return r.rep, err
}

func (r *run) stages(ctx context.Context) error {
	d, err := containers.New(ctx, r.rep.RunID, r.log)
	if err != nil {
		return err
	}
	r.d = d
	defer func() {
		r.collectLogs()
		if r.opt.Keep {
			r.log.Info("containers kept for debugging", "label", containers.RunLabel+"="+d.RunID())
			return
		}
		if err := d.Cleanup(); err != nil {
			r.log.Error("cleanup failed", "err", err)
		}
	}()
	if r.s.Previous != "" {
		if r.opt.PreviousImage == "" {
			return fmt.Errorf("the scenario starts from revision %s: build its image (BuildRevisionImage) and pass it as Options.PreviousImage", r.s.Previous)
		}
		r.recordVersions(ctx)
	}
	if r.net, err = d.CreateNetwork(ctx); err != nil {
		return err
	}
	if err := r.startNodes(ctx); err != nil {
		return err
	}
	if err := r.applyNetwork(ctx); err != nil {
		return err
	}
	stopPoll := r.startPoller(ctx)
	r.seriesBefore(ctx)
	r.log.Info("cluster formed; load and perturbations start")
	r.loadStart = time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { r.runWorkload(ctx) })
	wg.Go(func() { r.runEvents(ctx, r.loadStart, r.s.Events) })
	wg.Wait()
	r.heal(ctx)
	healedAt := time.Now()
	r.runEvents(ctx, time.Now(), r.s.AfterHeal)
	r.watchConvergence(ctx, "the final heal", healedAt)
	r.watchers.Wait()
	stopPoll()
	r.rep.Converged = true
	for _, c := range r.rep.Convergence {
		r.rep.Converged = r.rep.Converged && c.Converged
		r.rep.ConvergeSeconds = max(r.rep.ConvergeSeconds, c.Seconds)
	}
	if err := ctx.Err(); err != nil {
		// Checks against a cut-short run would report losses that are
		// only requests cancelled: say what happened instead.
		return fmt.Errorf("%s before the checks; nothing was checked", stopped(ctx))
	}
	r.check(ctx)
	r.rep.Checked = true
	return nil
}

// stopped says why ctx ended: the scenario's timeout or an interrupt.
func stopped(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "the scenario's timeout passed"
	}
	return "the run was interrupted"
}

// containerName is unique per run, so runs never collide on the engine.
func (r *run) containerName(n *node) string { return "meshreg-" + r.d.RunID() + "-" + n.spec.Name }

// nodeArgs are the serve flags of n: defaults first, so the scenario's own
// args override them.
func (r *run) nodeArgs(n *node, join []string) []string {
	args := []string{"serve", "--region", n.spec.Region, "--zone", n.spec.Zone,
		"--replicas", strconv.Itoa(r.s.Replicas), "--repair-interval", "2s"}
	args = append(args, r.s.Args...)
	args = append(args, n.spec.Args...)
	for _, j := range join {
		args = append(args, "--join", j)
	}
	return args
}

func (r *run) startContainer(ctx context.Context, n *node, join []string) error {
	image := r.opt.Image
	if r.s.Previous != "" && !n.spec.Later {
		image = r.opt.PreviousImage
	}
	return r.runContainer(ctx, n, image, r.nodeArgs(n, join), "")
}

// runContainer starts n's container from image with args, on the data
// volume of the container volumesFrom if not "".
func (r *run) runContainer(ctx context.Context, n *node, image string, args []string, volumesFrom string) error {
	c, err := r.d.Start(ctx, containers.Spec{Name: r.containerName(n), Image: image, Network: r.net, Port: 5000,
		Labels: map[string]string{"meshreg.testnet.node": n.spec.Name, "meshreg.testnet.scenario": r.s.Name},
		Args:   args, VolumesFrom: volumesFrom})
	if c != nil {
		r.cl.mu.Lock()
		n.c, n.image, n.args = c, image, args
		r.cl.mu.Unlock()
	}
	if err != nil {
		return err
	}
	r.cl.setState(n, stateRunning)
	return nil
}

// startNodes starts the initial nodes and waits until they agree on a
// leader and on the members.
func (r *run) startNodes(ctx context.Context) error {
	var initial []*node
	for _, n := range r.cl.nodes {
		if !n.spec.Later {
			initial = append(initial, n)
		}
	}
	if r.s.Start == "bootstrap-expect" {
		secret, err := bootstrapSecret()
		if err != nil {
			return err
		}
		// Docker's DNS on the run's network resolves container names, so
		// every node can name every other before any has an address.
		for _, n := range initial {
			var join []string
			for _, o := range initial {
				if o != n {
					join = append(join, "http://"+r.containerName(o)+":5000")
				}
			}
			// A fresh slice: the scenario's own Args must not be written through.
			n.spec.Args = slices.Concat(n.spec.Args, []string{"--bootstrap-expect", strconv.Itoa(len(initial)), "--join-token", secret})
			if err := r.startContainer(ctx, n, join); err != nil {
				return err
			}
		}
	} else {
		if err := r.startContainer(ctx, initial[0], nil); err != nil {
			return err
		}
		if err := r.cl.waitReady(ctx, initial[0], 60*time.Second); err != nil {
			return err
		}
		for _, n := range initial[1:] {
			if err := r.admit(ctx, n, initial[0]); err != nil {
				return err
			}
			if err := r.startContainer(ctx, n, []string{initial[0].c.URL()}); err != nil {
				return err
			}
		}
	}
	var last string
	start := time.Now()
	if !poll(ctx, 90*time.Second, 250*time.Millisecond, func() bool {
		last = r.cl.agreement(ctx, len(initial))
		return last == ""
	}) {
		return fmt.Errorf("the %d nodes did not agree on a leader and members in 90s (last: %s); see the node logs in %s", len(initial), last, filepath.Join(r.outDir, "logs"))
	}
	r.log.Info("nodes agree on a leader and members", "nodes", len(initial), "took", time.Since(start).Round(time.Millisecond))
	return r.waitVoters(ctx, len(initial), 90*time.Second)
}

// applyNetwork makes the network what the scenario and the current
// partition say, on every node with a network namespace: shaping toward
// linked regions, drops across the partition. It is re-run after any node
// starts, since a started container has a fresh namespace (and perhaps a
// new address).
func (r *run) applyNetwork(ctx context.Context) error {
	r.netMu.Lock()
	defer r.netMu.Unlock()
	r.cl.mu.Lock()
	var live []*node
	for _, n := range r.cl.nodes {
		if n.state == stateRunning || n.state == statePaused {
			live = append(live, n)
		}
	}
	cut := make(map[string]bool, len(r.cl.cutOff))
	for k, v := range r.cl.cutOff {
		cut[k] = v
	}
	r.cl.mu.Unlock()
	var errs []error
	var notes []string
	for _, n := range live {
		for _, l := range r.s.Links {
			other := ""
			switch n.spec.Region {
			case l.Regions[0]:
				other = l.Regions[1]
			case l.Regions[1]:
				other = l.Regions[0]
			default:
				continue
			}
			var ips []string
			for _, o := range live {
				if o.spec.Region == other {
					ips = append(ips, o.c.IP())
				}
			}
			sh, err := n.c.Shape(ctx, l.Rate, l.Latency.Duration, ips)
			if err != nil {
				errs = append(errs, err)
			}
			if sh.Note != "" {
				notes = append(notes, fmt.Sprintf("link %s–%s: %s (rate %s applied)", l.Regions[0], l.Regions[1], sh.Note, l.Rate))
			}
		}
		if err := n.c.Unblock(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		if len(cut) == 0 {
			continue
		}
		var drop []string
		for _, o := range live {
			if o != n && cut[o.spec.Name] != cut[n.spec.Name] {
				drop = append(drop, o.c.IP())
			}
		}
		if len(drop) > 0 {
			if err := n.c.Block(ctx, drop); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, note := range notes {
		r.note(note)
	}
	return errors.Join(errs...)
}

// note adds a line to the report's notes once.
func (r *run) note(s string) {
	r.repMu.Lock()
	defer r.repMu.Unlock()
	for _, n := range r.rep.Notes {
		if n == s {
			return
		}
	}
	r.rep.Notes = append(r.rep.Notes, s)
	r.log.Warn(s)
}

// heal undoes every partition and pause. Killed, stopped and removed
// nodes stay down unless the scenario starts them again.
func (r *run) heal(ctx context.Context) {
	r.cl.mu.Lock()
	clear(r.cl.cutOff)
	var paused []*node
	for _, n := range r.cl.nodes {
		if n.state == statePaused {
			paused = append(paused, n)
		}
	}
	r.cl.mu.Unlock()
	for _, n := range paused {
		if err := n.c.Unpause(ctx); err != nil {
			r.rep.fail("heal: %v", err)
			continue
		}
		r.cl.setState(n, stateRunning)
	}
	if err := r.applyNetwork(ctx); err != nil {
		r.rep.fail("heal: %v", err)
	}
	r.log.Info("healed: partitions and pauses undone")
}

// collectLogs writes every container's logs to the output directory (a
// failed run keeps its evidence) and scans them for crashes.
func (r *run) collectLogs() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range r.cl.nodes {
		logs := n.logs
		if n.c != nil && r.cl.stateOf(n) != stateRemoved {
			l, err := n.c.Logs(ctx)
			if err != nil {
				r.log.Warn("reading logs", "node", n.spec.Name, "err", err)
			}
			logs += l
		}
		if logs == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(r.outDir, "logs", n.spec.Name+".log"), []byte(logs), 0o644); err != nil {
			r.log.Warn("writing logs", "node", n.spec.Name, "err", err)
		}
		if line := crashLine(logs); line != "" {
			r.rep.fail("node %s crashed: %q in its logs", n.spec.Name, line)
		}
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
