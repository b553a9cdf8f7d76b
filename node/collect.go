package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/node/gc"
)

// Garbage collection as the node runs it (package gc does the work):
//
//   - CollectGarbage (POST /_meshreg/v1/gc, and the leader's schedule)
//     catches up with the leader, marks at one applied index, proposes the
//     sweep batches through Raft, then asks every member for its report
//     (gcReportProtocol) once it applied them;
//   - every node's sweeper (a loop) frees its files of the blobs the
//     applied sweeps tombstoned, and its leftovers, off the apply path;
//   - pins keep the files in use: client and peer reads, and uploads until
//     their link is committed.
//
// A freed blob is no longer announced: the reprovider walks the disk, so
// the node stops renewing its DHT record (kad-dht cannot withdraw one; it
// expires within 48 h), and the node answers has and blob requests for it
// "not held" from then on, as for any blob it does not hold.

// gcReportProtocol asks a member for what it freed in one collection, once
// it applied the collection's sweeps (gcReportRequest → gc.Report).
const gcReportProtocol = "/meshreg/gc-report/1.0.0"

// gcReportTimeout bounds the wait for one member's report;
// gcProgressEvery is how often a collection says it is still waiting.
const (
	gcReportTimeout = 60 * time.Second
	gcProgressEvery = 10 * time.Second
	// gcReportSlack is how much longer than gcReportTimeout a member's
	// answer, which waits for its followers' within gcReportTimeout, may
	// take to arrive; the handler's own bound (node.go) adds it too.
	gcReportSlack = 10 * time.Second
	// gcFollowerAsks bounds the followers a member asks at a time.
	gcFollowerAsks = 32
	// maxGCAnswerLen bounds an answer on gcReportProtocol: a report per
	// follower a member serves (at most maxTailClients, about 250 bytes
	// each) and its own.
	maxGCAnswerLen = 1 << 20
)

type gcReportRequest struct {
	Mark    uint64 `json:"mark"`
	Through uint64 `json:"through"`
	Cutoff  int64  `json:"cutoff"`
	// Followers asks a member for the reports of the followers of the
	// metadata it serves a tail to, too (older releases ignore it).
	Followers bool `json:"followers,omitempty"`
}

// gcMeta is what garbage collection needs of the metadata store beyond
// Metadata; consensus.Store has it. A node over a store without it (a
// fake) does not collect.
type gcMeta interface {
	gc.Meta
	gc.SweepMeta
	WatchApplied(ctx context.Context) (consensus.Applied, <-chan consensus.Applied)
}

var _ gcMeta = (*consensus.Store)(nil)

// collector is the node's garbage collection state.
type collector struct {
	pins    gc.Pins
	meta    gcMeta      // nil: this node does not collect
	sweeper *gc.Sweeper // nil: this node frees no files
	running sync.Mutex  // one collection at a time from this node

	runs       *prometheus.CounterVec
	freedBlobs prometheus.Counter
	freedBytes prometheus.Counter
	duration   prometheus.Gauge
	lastRun    prometheus.Gauge
}

func newCollector() *collector {
	c := &collector{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshreg_gc_runs_total",
			Help: "Garbage collections this node coordinated, by result (ok, dry_run, error)."}, []string{"result"}),
		freedBlobs: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshreg_gc_blobs_freed_total",
			Help: "Blob files garbage collection deleted from this node's disk (collected blobs and leftovers)."}),
		freedBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "meshreg_gc_bytes_freed_total",
			Help: "Bytes of blob files garbage collection deleted from this node's disk."}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshreg_gc_last_duration_seconds",
			Help: "How long the last collection this node coordinated took, reports included."}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{Name: "meshreg_gc_last_run_timestamp_seconds",
			Help: "When the last collection this node coordinated ended (Unix seconds; 0: none)."}),
	}
	for _, r := range []string{"ok", "dry_run", "error"} {
		c.runs.WithLabelValues(r)
	}
	return c
}

func (c *collector) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.runs, c.freedBlobs, c.freedBytes, c.duration, c.lastRun}
}

// setUpCollector wires garbage collection when the metadata store supports
// it; files (nil: none) lets the sweeper delete blob files.
func (n *Node) setUpCollector(files gc.Files) {
	n.gc = newCollector()
	m, ok := n.meta.(gcMeta)
	if !ok {
		return
	}
	n.gc.meta = m
	if files == nil || n.cfg.DataDir == "" {
		return
	}
	s, err := gc.NewSweeper(gc.SweeperConfig{
		Files: files, Meta: m, Pins: &n.gc.pins, CursorFile: gc.CursorFile(n.cfg.DataDir),
		Applied: func(ctx context.Context) <-chan state.Applied { _, ch := m.WatchApplied(ctx); return ch },
		Every:   time.Minute, Log: n.log.With("component", "gc"),
		OnFreed: func(bytes int64) { n.gc.freedBlobs.Inc(); n.gc.freedBytes.Add(float64(bytes)) },
	})
	if err != nil {
		n.log.Error("garbage collection cannot sweep this node's disk", "err", err)
		return
	}
	n.gc.sweeper = s
}

// gcLoops are the sweeper and the schedule (nil entries are skipped).
func (n *Node) gcLoops() []loop {
	var out []loop
	if n.gc.sweeper != nil {
		out = append(out, n.gc.sweeper)
	}
	if n.gc.meta != nil && n.cfg.GCInterval > 0 {
		out = append(out, gcSchedule{n: n, every: n.cfg.GCInterval})
	}
	return out
}

// gcSchedule runs a collection every interval on the node that leads then.
type gcSchedule struct {
	n     *Node
	every time.Duration
}

func (s gcSchedule) Run(ctx context.Context) error {
	t := time.NewTicker(s.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if s.n.meta.Status().State != consensus.Leader {
			continue
		}
		res, err := s.n.CollectGarbage(ctx, api.GCRequest{Grace: s.n.cfg.GCGrace}, nil)
		if err != nil {
			s.n.log.Warn("scheduled garbage collection failed; the next one is due in one interval", "err", err, "interval", s.every)
			continue
		}
		s.n.log.Info("scheduled garbage collection done", "blobs", res.Blobs, "bytes", res.Bytes, "took", res.Duration)
	}
}

// pinBlob marks d in use until release (see gc.Pins).
func (n *Node) pinBlob(d digest.Digest) (release func()) { return n.gc.pins.Pin(d) }

// pinnedReader releases its pin when closed. Over a file it is an
// api.FileReader, so the API still sends it with sendfile.
type pinnedReader struct {
	io.ReadSeekCloser
	release func()
}

func (p pinnedReader) OSFile() *os.File {
	f, _ := p.ReadSeekCloser.(*os.File)
	return f
}

var _ api.FileReader = pinnedReader{}

// pinnedSender is a pinnedReader over a blob still being fetched, which
// sends itself (api.BlobSender: sendfile of the bytes it has so far).
type pinnedSender struct{ pinnedReader }

var _ api.BlobSender = pinnedSender{}

func (p pinnedSender) SendTo(w io.Writer, limit int64) (int64, error) {
	return p.ReadSeekCloser.(api.BlobSender).SendTo(w, limit)
}

// pinned wraps r, whose reading keeps blob d pinned until it is closed.
func pinned(r io.ReadSeekCloser, release func()) io.ReadSeekCloser {
	if _, ok := r.(api.BlobSender); ok {
		return pinnedSender{pinnedReader{r, release}}
	}
	return pinnedReader{r, release}
}

func (p pinnedReader) Close() error {
	defer p.release()
	return p.ReadSeekCloser.Close()
}

// CollectGarbage runs one collection coordinated by this node (see the top
// of this file).
func (n *Node) CollectGarbage(ctx context.Context, req api.GCRequest, progress func(string)) (api.GCResult, error) {
	if progress == nil {
		progress = func(string) {}
	}
	res := api.GCResult{DryRun: req.DryRun, Grace: req.Grace.String()}
	if n.gc.meta == nil {
		return res, fmt.Errorf("node: %w: this node's metadata store does not support it", api.ErrGCUnavailable)
	}
	if !n.gc.running.TryLock() {
		return res, fmt.Errorf("node: %w: a collection coordinated by this node is in progress; retry when it ends", api.ErrGCUnavailable)
	}
	defer n.gc.running.Unlock()
	began := time.Now()
	result := "error"
	defer func() {
		n.gc.runs.WithLabelValues(result).Inc()
		n.gc.duration.Set(time.Since(began).Seconds())
		n.gc.lastRun.Set(float64(time.Now().Unix()))
	}()
	if !req.DryRun {
		if err := n.membersApply(state.OpGCSweep); err != nil {
			return res, fmt.Errorf("node: %w: %w", api.ErrGCUnavailable, err)
		}
	}
	// Mark on current state (a stale one is safe, it frees less).
	if err := n.catchUp(ctx); err != nil {
		return res, fmt.Errorf("node: %w: catching up with the leader before the mark: %w", api.ErrGCUnavailable, err)
	}
	// Retention first (retention.go): what it deletes is gone at the mark.
	var err error
	if res.Retention, res.RetentionSkipped, err = n.applyRetention(ctx, req.DryRun, progress); err != nil {
		return res, fmt.Errorf("node: garbage collection: %w", err)
	}
	plan, err := gc.MarkAndSweep(ctx, n.gc.meta, gc.Options{Grace: req.Grace, DryRun: req.DryRun, Progress: progress})
	res.MarkIndex, res.Manifests, res.Links, res.Blobs, res.Bytes, res.Kept = plan.MarkIndex, plan.Manifests, plan.Links, len(plan.Blobs), plan.Bytes, plan.Kept
	if err != nil {
		return res, fmt.Errorf("node: garbage collection: %w (batches committed before the failure are applied; run it again)", err)
	}
	if req.DryRun {
		for _, c := range plan.Blobs[:min(len(plan.Blobs), api.MaxGCCandidatesListed)] {
			res.Candidates = append(res.Candidates, api.GCCandidate{Digest: c.Digest.String(), Size: c.Size, Repos: c.Repos})
		}
		result = "dry_run"
		res.Duration = time.Since(began).Round(time.Millisecond).String()
		return res, nil
	}
	rq := gcReportRequest{Mark: plan.MarkIndex, Through: n.meta.AppliedIndex(), Cutoff: plan.Cutoff.UnixNano()}
	progress(fmt.Sprintf("waiting for every member to sweep through index %d", rq.Through))
	// A line every few seconds while members sweep keeps the client's
	// connection alive (the API cuts one idle for its idle timeout).
	reports := make(chan []api.GCNodeReport, 1)
	go func() { reports <- n.gcReports(ctx, rq) }()
	tick := time.NewTicker(gcProgressEvery)
	for res.Nodes == nil {
		select {
		case res.Nodes = <-reports:
		case <-tick.C:
			progress("members are still sweeping")
		}
	}
	tick.Stop()
	gcProgressReports(res.Nodes, progress)
	result = "ok"
	res.Duration = time.Since(began).Round(time.Millisecond).String()
	n.log.Info("garbage collection done", "mark", plan.MarkIndex, "blobs", len(plan.Blobs), "bytes", plan.Bytes,
		"kept", plan.Kept, "grace", req.Grace, "took", res.Duration)
	return res, nil
}

// gcProgressReports says what each node freed: a line per member, and per
// follower when there are few of them; past gcFollowersListed, one line
// for all the followers and one for each follower without a report (at
// most gcFollowersListed of those).
func gcProgressReports(reports []api.GCNodeReport, progress func(string)) {
	var followers, failed, blobs int
	var bytes int64
	for _, r := range reports {
		if r.Role == "follower" {
			followers++
		}
	}
	listAll := followers <= gcFollowersListed
	for _, r := range reports {
		name := "node " + r.Node
		if r.Role == "follower" {
			name = "follower " + r.Node
			if r.Error == "" {
				blobs, bytes = blobs+r.Blobs, bytes+r.Bytes
			} else if failed++; !listAll && failed > gcFollowersListed {
				continue
			}
			if !listAll && r.Error == "" {
				continue
			}
		}
		if r.Error != "" {
			progress(fmt.Sprintf("%s: no report: %s", name, r.Error))
			continue
		}
		progress(fmt.Sprintf("%s: freed %d blobs (%d bytes), %d leftovers (%d bytes), kept %d in use or newer",
			name, r.Blobs, r.Bytes, r.LeftoverBlobs, r.LeftoverBytes, r.Kept))
	}
	if !listAll {
		progress(fmt.Sprintf("%d followers: %d reported, freeing %d blobs (%d bytes) in all; %d without a report",
			followers, followers-failed, blobs, bytes, failed))
	}
}

// gcFollowersListed is how many followers the progress lines list one by
// one (the result lists them all).
const gcFollowersListed = 20

// gcReports asks every member (this node too) for its report, at once,
// and each member for those of the followers of the metadata it serves a
// tail to (the leader does not know them; their member is connected to
// them): the reports go down a tree of depth two, never all-pairs.
func (n *Node) gcReports(ctx context.Context, rq gcReportRequest) []api.GCNodeReport {
	members, err := n.meta.Members()
	if err != nil {
		return []api.GCNodeReport{{Node: n.host.ID().String(), Role: "member", Error: "listing members: " + err.Error()}}
	}
	rq.Followers = true
	out := make([][]api.GCNodeReport, len(members))
	var g errgroup.Group
	for i, m := range members {
		g.Go(func() error {
			out[i] = n.gcReportOf(ctx, m, rq)
			return nil
		})
	}
	_ = g.Wait()
	var all []api.GCNodeReport
	for _, r := range out {
		all = append(all, r...)
	}
	return all
}

// gcReportOf is member m's report, then its followers' when rq asks.
func (n *Node) gcReportOf(ctx context.Context, m consensus.Member, rq gcReportRequest) []api.GCNodeReport {
	rep := api.GCNodeReport{Node: m.ID, Role: "member"}
	// A member asks its followers within gcReportTimeout: its answer
	// gets a little longer to arrive.
	ctx, cancel := context.WithTimeout(ctx, gcReportTimeout+gcReportSlack)
	defer cancel()
	if m.ID == n.host.ID().String() {
		ans := n.gcAnswer(ctx, rq)
		return append([]api.GCNodeReport{ans.of(rep)}, ans.Followers...)
	}
	p, err := peerOf(n.host, consensus.Server{ID: m.ID, Address: m.Address})
	if err != nil {
		rep.Error = err.Error()
		return []api.GCNodeReport{rep}
	}
	ans, err := n.askGCReport(ctx, p, rq)
	if err != nil {
		rep.Error = err.Error()
		return []api.GCNodeReport{rep}
	}
	// A member of an older release ignores rq.Followers: no follower
	// reports then. At most what one member may serve.
	fs := ans.Followers[:min(len(ans.Followers), maxTailClients)]
	for i := range fs {
		fs[i].Role, fs[i].Via = "follower", m.ID
	}
	return append([]api.GCNodeReport{ans.of(rep)}, fs...)
}

// askGCReport asks peer p for its gcAnswer.
func (n *Node) askGCReport(ctx context.Context, p peer.ID, rq gcReportRequest) (gcAnswer, error) {
	b, _ := json.Marshal(rq)
	resp, err := n.host.Request(ctx, p, gcReportProtocol, b, maxGCAnswerLen)
	if err != nil {
		return gcAnswer{}, fmt.Errorf("asking for its report: %w (it sweeps when it applies the collection)", err)
	}
	var ans gcAnswer
	if err := json.Unmarshal(resp, &ans); err != nil {
		return gcAnswer{}, fmt.Errorf("bad report: %w", err)
	}
	if ans.Error != "" {
		return gcAnswer{}, fmt.Errorf("bad report: %s", ans.Error)
	}
	return ans, nil
}

// gcAnswer is the answer on gcReportProtocol: the node's own report (or
// why it has none), and its followers' when the request asked.
type gcAnswer struct {
	gc.Report
	Error     string             `json:"error,omitempty"`
	Followers []api.GCNodeReport `json:"followers,omitempty"`
}

// of fills rep with the answer's own report, or its error.
func (a gcAnswer) of(rep api.GCNodeReport) api.GCNodeReport {
	if a.Error != "" {
		rep.Error = a.Error
		return rep
	}
	r := a.Report
	rep.Blobs, rep.Bytes, rep.LeftoverBlobs, rep.LeftoverBytes, rep.Kept = r.Blobs, r.Bytes, r.LeftoverBlobs, r.LeftoverBytes, r.Kept
	return rep
}

// gcAnswer is this node's answer to rq: its report and, when rq asks,
// those of the followers it serves a tail to, asked at once (at most
// gcFollowerAsks at a time); all within gcReportTimeout, so the answer
// leaves before its asker (who waits gcReportSlack more) gives up.
func (n *Node) gcAnswer(ctx context.Context, rq gcReportRequest) gcAnswer {
	ctx, cancel := context.WithTimeout(ctx, gcReportTimeout)
	defer cancel()
	var ans gcAnswer
	var followers []api.GCNodeReport
	var g errgroup.Group
	if rq.Followers {
		g.Go(func() error {
			followers = n.followerGCReports(ctx, gcReportRequest{Mark: rq.Mark, Through: rq.Through, Cutoff: rq.Cutoff})
			return nil
		})
	}
	r, err := n.gcReport(ctx, rq)
	if err != nil {
		ans.Error = err.Error()
	} else {
		ans.Report = r
	}
	_ = g.Wait()
	ans.Followers = followers
	return ans
}

// followerGCReports asks each follower this node serves for its report.
func (n *Node) followerGCReports(ctx context.Context, rq gcReportRequest) []api.GCNodeReport {
	tails := n.tails.list()
	tails = tails[:min(len(tails), maxTailClients)]
	out := make([]api.GCNodeReport, len(tails))
	self := n.host.ID().String()
	var g errgroup.Group
	g.SetLimit(gcFollowerAsks)
	for i, tc := range tails {
		g.Go(func() error {
			rep := api.GCNodeReport{Node: tc.peer.String(), Role: "follower", Via: self}
			ans, err := n.askGCReport(ctx, tc.peer, rq)
			if err != nil {
				rep.Error = err.Error()
			} else {
				rep = ans.of(rep)
			}
			out[i] = rep
			return nil
		})
	}
	_ = g.Wait()
	return out
}

// gcReport is this node's report of one collection, once it applied it.
func (n *Node) gcReport(ctx context.Context, rq gcReportRequest) (gc.Report, error) {
	if n.gc.sweeper == nil {
		return gc.Report{}, errors.New("this node does not sweep its disk")
	}
	if rq.Mark == 0 || rq.Through < rq.Mark || rq.Cutoff < 0 {
		return gc.Report{}, errors.New("bad report request")
	}
	if err := n.meta.WaitApplied(ctx, rq.Through); err != nil {
		return gc.Report{}, fmt.Errorf("waiting to apply index %d: %w", rq.Through, err)
	}
	// The cutoff comes from the coordinating member; a cutoff in the
	// future would take leftovers written this moment.
	return n.gc.sweeper.ReportFor(ctx, rq.Mark, time.Unix(0, min(rq.Cutoff, time.Now().UnixNano())))
}

// serveGCReport answers gcReportProtocol.
func (n *Node) serveGCReport(ctx context.Context, _ peer.ID, req []byte) []byte {
	var rq gcReportRequest
	var ans gcAnswer
	if err := json.Unmarshal(req, &rq); err != nil {
		ans.Error = "bad request: " + err.Error()
	} else {
		ans = n.gcAnswer(ctx, rq)
	}
	b, _ := json.Marshal(ans)
	return b
}

var _ api.GarbageCollector = (*Node)(nil)
