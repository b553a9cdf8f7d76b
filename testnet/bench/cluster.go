package main

// The cluster benchmark (-cluster, on by default): tag writes on a 3-node
// meshreg cluster of processes on loopback, and the time a write takes to
// become visible on the nodes that did not take it.
//
//  1. sequential: -cluster-writes tag writes, one at a time, through one
//     follower (which forwards them to the leader and answers once they
//     are committed): latency p50/p99 and writes/s;
//  2. concurrent: -cluster-writes tag writes from -cluster-workers workers,
//     spread over both followers: writes/s and latency p50/p99;
//  3. commit to visibility: -cluster-writes sequential writes through
//     follower A; after each PUT returns, the other follower B and the
//     leader are polled every -cluster-poll until they serve the tag with
//     the digest written; p50/p99 of the time from the PUT's return to the
//     answer of the first GET that serves it (so it includes one GET round
//     trip).
//
// A tag write is the PUT of a small OCI image manifest (over one config
// blob pushed beforehand to every node) under a tag never written before,
// the manifest made distinct by an annotation. Each phase stops early after
// -cluster-max-time; the table says how many writes it made. Afterwards,
// untimed, every node must serve every acknowledged tag with its digest.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	clusterRepo = "bench/cluster"
	clusterSize = 3
	// visibilityTimeout bounds the wait for one write to show on a node.
	visibilityTimeout = 10 * time.Second
	// writeTimeout bounds one tag write.
	writeTimeout = 30 * time.Second
	// defaultVoters is meshreg's default --voters: in a larger cluster the
	// other members stay non-voters.
	defaultVoters = 3
)

// cluster is a running set of meshreg nodes that agree on a leader.
type cluster struct {
	nodes  []*server
	voters int // how many of them vote once converged
	// members is how many are Raft members once converged: the voters and
	// at most --max-raft-members non-voters; the others follow the
	// metadata without being members (node/follow.go).
	members   int
	leader    *server
	followers []*server
}

// startCluster starts size nodes under dir: the first bootstraps, the
// others join it through its API URL with a join token from the first;
// every node also gets the serve flags in extra. It returns once they all
// name the same leader and count testnet.ExpectedVoters(size,
// defaultVoters) voters. On error it stops what it started.
func startCluster(ctx context.Context, bin, dir string, size int, extra ...string) (cl *cluster, err error) {
	return startClusterWithin(ctx, bin, dir, size, 60*time.Second, nil, extra...)
}

// startClusterWithin is startCluster waiting at most converge for the
// nodes to agree, node i also getting the flags perNode(i) (when perNode
// is not nil).
func startClusterWithin(ctx context.Context, bin, dir string, size int, converge time.Duration, perNode func(i int) ([]string, error), extra ...string) (cl *cluster, err error) {
	cl = &cluster{voters: testnet.ExpectedVoters(size, defaultVoters)}
	maxNonvoters := node.DefaultMaxRaftMembers
	if i := slices.Index(extra, "--max-raft-members"); i >= 0 && i+1 < len(extra) {
		if maxNonvoters, err = strconv.Atoi(extra[i+1]); err != nil {
			return cl, fmt.Errorf("--max-raft-members %q: %w", extra[i+1], err)
		}
	}
	cl.members = min(size, max(defaultVoters, cl.voters)+maxNonvoters)
	defer func() {
		if err != nil {
			cl.stop()
		}
	}()
	if !slices.Contains(extra, "--stabilization-time") {
		extra = append(slices.Clone(extra), "--stabilization-time", testnet.HarnessStabilization.String())
	}
	var token string
	for i := range size {
		args := slices.Clone(extra)
		if i > 0 {
			if token == "" {
				// The joiners are admitted with a token from the first node
				// (asked over loopback, as `meshreg token create` does).
				if token, err = testnet.JoinTokenAt(ctx, cl.nodes[0].url(), time.Hour); err != nil {
					return cl, err
				}
			}
			args = append(args, "--join", cl.nodes[0].url(), "--join-token", token)
		}
		pprofAddr := ""
		if perNode != nil {
			more, err := perNode(i)
			if err != nil {
				return cl, err
			}
			args = append(args, more...)
			if j := slices.Index(more, "--pprof-listen"); j >= 0 && j+1 < len(more) {
				pprofAddr = more[j+1]
			}
		}
		s, err := startMeshregNode(ctx, bin, filepath.Join(dir, fmt.Sprintf("node%d", i+1)), fmt.Sprintf("meshreg node %d", i+1), args...)
		if err != nil {
			return cl, err
		}
		s.pprof = pprofAddr
		cl.nodes = append(cl.nodes, s)
	}
	if err := cl.waitConverged(ctx, converge); err != nil {
		return cl, err
	}
	return cl, nil
}

// stop ends every node with SIGTERM, all at once, and waits for them.
func (cl *cluster) stop() {
	var wg sync.WaitGroup
	for _, s := range cl.nodes {
		wg.Go(s.stop)
	}
	wg.Wait()
}

func nodeStatus(ctx context.Context, s *server) (testnet.NodeStatus, error) {
	var st testnet.NodeStatus
	code, _, body, err := s.client.Get(ctx, "/_meshreg/v1/status", nil)
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("GET %s/_meshreg/v1/status: %d", s.url(), code)
	}
	return st, json.Unmarshal(body, &st)
}

// waitConverged waits until every node reports the same leader and
// len(cl.nodes) members of which cl.voters vote, then sets cl.leader and
// cl.followers.
func (cl *cluster) waitConverged(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "no status yet"
	for {
		if cl.converged(ctx, &last) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the %d nodes did not agree on a leader, %d members and %d voters within %v; last: %s", len(cl.nodes), cl.members, cl.voters, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (cl *cluster) converged(ctx context.Context, last *string) bool {
	leaderID := ""
	var leader *server
	var followers []*server
	for _, s := range cl.nodes {
		if s.proc.Exited() {
			*last = s.failed(errors.New("exited")).Error()
			return false
		}
		st, err := nodeStatus(ctx, s)
		if err != nil {
			*last = err.Error()
			return false
		}
		r := st.Raft
		if r.LeaderID == "" || (leaderID != "" && r.LeaderID != leaderID) || len(r.Members) != cl.members || st.Voters() != cl.voters {
			*last = fmt.Sprintf("%s: state %s, leader %q, %d members, %d voters", s.name, r.State, r.LeaderID, len(r.Members), st.Voters())
			return false
		}
		leaderID = r.LeaderID
		if st.NodeID == r.LeaderID && r.State == "Leader" {
			leader = s
		} else {
			followers = append(followers, s)
		}
	}
	if leader == nil || len(followers) != len(cl.nodes)-1 {
		*last = fmt.Sprintf("no node reports itself as the leader %q", leaderID)
		return false
	}
	cl.leader, cl.followers = leader, followers
	return true
}

// tagWriter makes distinct small manifests over one config blob.
type tagWriter struct {
	config digest.Digest
	size   int64

	mu    sync.Mutex
	acked map[string]digest.Digest // tag → digest of every acknowledged write
}

const clusterConfigBlob = `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`

// newTagWriter pushes the config blob to every node (blobs do not
// replicate between nodes yet; only metadata does).
func newTagWriter(ctx context.Context, cl *cluster) (*tagWriter, error) {
	w := &tagWriter{size: int64(len(clusterConfigBlob)), acked: map[string]digest.Digest{}}
	for _, s := range cl.nodes {
		d, err := s.client.PushBytes(ctx, clusterRepo, []byte(clusterConfigBlob))
		if err != nil {
			return nil, fmt.Errorf("%s: push config blob: %w", s.name, err)
		}
		w.config = d
	}
	return w, nil
}

func (w *tagWriter) manifest(tag string) []byte {
	m, _ := json.Marshal(ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: w.config, Size: w.size},
		Layers:      []ocispec.Descriptor{},
		Annotations: map[string]string{"org.meshreg.bench.write": tag},
	})
	return m
}

// write puts a new manifest under tag through s and returns its digest
// and how long the PUT took.
func (w *tagWriter) write(ctx context.Context, s *server, tag string) (digest.Digest, time.Duration, error) {
	body := w.manifest(tag)
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	start := time.Now()
	d, err := s.client.PutManifest(ctx, clusterRepo, tag, ocispec.MediaTypeImageManifest, body)
	took := time.Since(start)
	if err != nil {
		return "", took, fmt.Errorf("%s: %w", s.name, err)
	}
	w.mu.Lock()
	w.acked[tag] = d
	w.mu.Unlock()
	return d, took, nil
}

// samples collects the outcome of one phase.
type samples struct {
	mu       sync.Mutex
	ms       []float64 // one per successful write (or visibility), in ms
	failed   int
	firstErr error
}

func (s *samples) ok(d time.Duration) {
	s.mu.Lock()
	s.ms = append(s.ms, float64(d)/float64(time.Millisecond))
	s.mu.Unlock()
}

func (s *samples) fail(err error) {
	s.mu.Lock()
	s.failed++
	if s.firstErr == nil {
		s.firstErr = err
	}
	s.mu.Unlock()
}

func (s *samples) note(what string) string {
	if s.failed == 0 {
		return ""
	}
	return fmt.Sprintf("%s: %d failed, first: %v", what, s.failed, s.firstErr)
}

// writes makes up to n tag writes named prefix-i from workers goroutines,
// worker k writing through targets[k%len(targets)], until n are done or
// maxTime has passed. It returns the latencies and the wall time.
func writes(ctx context.Context, w *tagWriter, targets []*server, prefix string, n, workers int, maxTime time.Duration) (*samples, time.Duration) {
	res := &samples{}
	var next atomic.Int64
	start := time.Now()
	deadline := start.Add(maxTime)
	var wg sync.WaitGroup
	for k := range workers {
		s := targets[k%len(targets)]
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				_, took, err := w.write(ctx, s, fmt.Sprintf("%s-%d", prefix, i))
				if err != nil {
					res.fail(err)
					continue
				}
				res.ok(took)
			}
		})
	}
	wg.Wait()
	return res, time.Since(start)
}

// visible polls s every poll until it serves repo:tag with digest d, and
// returns the time from since to the answer that did, and whether that was
// the first poll.
func visible(ctx context.Context, s *server, tag string, d digest.Digest, since time.Time, poll time.Duration) (time.Duration, bool, error) {
	deadline := since.Add(visibilityTimeout)
	accept := http.Header{"Accept": {testnet.ManifestAccept}}
	path := "/v2/" + clusterRepo + "/manifests/" + tag
	for attempt := 1; ; attempt++ {
		sent := time.Now()
		code, h, _, err := s.client.Get(ctx, path, accept)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %w", s.name, err)
		}
		if code == http.StatusOK {
			if got := h.Get("Docker-Content-Digest"); got != d.String() {
				return 0, false, fmt.Errorf("%s serves %s:%s as %s, want %s", s.name, clusterRepo, tag, got, d)
			}
			return time.Since(since), attempt == 1, nil
		}
		if code != http.StatusNotFound {
			return 0, false, fmt.Errorf("GET %s%s: %d", s.url(), path, code)
		}
		if time.Now().After(deadline) {
			return 0, false, fmt.Errorf("%s: %s:%s not visible %v after the PUT returned", s.name, clusterRepo, tag, visibilityTimeout)
		}
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-time.After(time.Until(sent.Add(poll))):
		}
	}
}

// visibility makes up to n sequential writes through a and, after each,
// waits until every node in others serves it. It returns one set of
// samples per node in others and, per node, how many writes were visible
// at the first poll.
func visibility(ctx context.Context, w *tagWriter, a *server, others []*server, n int, poll, maxTime time.Duration) (puts *samples, vis []*samples, first []int) {
	puts = &samples{}
	vis = make([]*samples, len(others))
	for j := range vis {
		vis[j] = &samples{}
	}
	first = make([]int, len(others))
	deadline := time.Now().Add(maxTime)
	for i := 0; i < n && ctx.Err() == nil && time.Now().Before(deadline); i++ {
		tag := fmt.Sprintf("vis-%d", i)
		d, took, err := w.write(ctx, a, tag)
		if err != nil {
			puts.fail(err)
			continue
		}
		returned := time.Now()
		puts.ok(took)
		var wg sync.WaitGroup
		for j, s := range others {
			wg.Go(func() {
				dt, atFirst, err := visible(ctx, s, tag, d, returned, poll)
				if err != nil {
					vis[j].fail(err)
					return
				}
				vis[j].ok(dt)
				if atFirst {
					first[j]++
				}
			})
		}
		wg.Wait()
	}
	return puts, vis, first
}

// verifyAcked checks, untimed, that every node serves every acknowledged
// tag with the digest written, allowing up to timeout for followers to
// catch up.
func verifyAcked(ctx context.Context, cl *cluster, w *tagWriter, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	accept := http.Header{"Accept": {testnet.ManifestAccept}}
	for _, s := range cl.nodes {
		for tag, d := range w.acked {
			for {
				code, h, _, err := s.client.Get(ctx, "/v2/"+clusterRepo+"/manifests/"+tag, accept)
				if err != nil {
					return err
				}
				got := h.Get("Docker-Content-Digest")
				if code == http.StatusOK && got == d.String() {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s serves acknowledged %s:%s with status %d, digest %q; want %s", s.name, clusterRepo, tag, code, got, d)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	return nil
}

// runCluster starts a 3-node cluster under dir, measures it and returns
// the Markdown table. The nodes are stopped (SIGTERM) before it returns.
func runCluster(ctx context.Context, c config, bin, dir string) (string, error) {
	cl, err := startCluster(ctx, bin, dir, clusterSize)
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	defer cl.stop()
	logf("cluster: leader %s (%s), followers %s (%s) and %s (%s)", cl.leader.name, cl.leader.addr,
		cl.followers[0].name, cl.followers[0].addr, cl.followers[1].name, cl.followers[1].addr)

	w, err := newTagWriter(ctx, cl)
	if err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	// Warm up connections and the forwarding path; not counted.
	for i, s := range cl.followers {
		if _, _, err := w.write(ctx, s, fmt.Sprintf("warmup-%d", i)); err != nil {
			return "", fmt.Errorf("cluster: warm-up write: %w", err)
		}
	}

	n, maxTime := c.clusterWrites, c.clusterMaxTime
	seq, seqWall := writes(ctx, w, cl.followers[:1], "seq", n, 1, maxTime)
	logf("cluster: %d sequential writes through %s in %v (%d failed)", len(seq.ms), cl.followers[0].name, seqWall.Round(time.Millisecond), seq.failed)
	conc, concWall := writes(ctx, w, cl.followers, "conc", n, c.clusterWorkers, maxTime)
	logf("cluster: %d concurrent writes (%d workers) in %v (%d failed)", len(conc.ms), c.clusterWorkers, concWall.Round(time.Millisecond), conc.failed)
	others := []*server{cl.followers[1], cl.leader}
	puts, vis, first := visibility(ctx, w, cl.followers[0], others, n, c.clusterPoll, maxTime)
	logf("cluster: %d writes through %s polled on %s and %s (%d failed)", len(puts.ms), cl.followers[0].name, others[0].name, others[1].name, puts.failed)
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	if len(seq.ms) == 0 || len(conc.ms) == 0 || len(puts.ms) == 0 {
		return "", fmt.Errorf("cluster: a phase made no successful write: %v", errors.Join(seq.firstErr, conc.firstErr, puts.firstErr))
	}
	if err := verifyAcked(ctx, cl, w, 10*time.Second); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}

	var b strings.Builder
	b.WriteString("| metric (3-node meshreg cluster) | value |\n| --- | ---: |\n")
	row := func(label, format string, v float64) { fmt.Fprintf(&b, "| %s | "+format+" |\n", label, v) }
	seqLabel := fmt.Sprintf("sequential tag writes through a follower (%d writes)", len(seq.ms))
	row(seqLabel+", p50 latency, ms", "%.2f", percentile(seq.ms, 50))
	row(seqLabel+", p99 latency, ms", "%.2f", percentile(seq.ms, 99))
	row(seqLabel+", writes/s", "%.0f", float64(len(seq.ms))/seqWall.Seconds())
	concLabel := fmt.Sprintf("concurrent tag writes, %d workers over both followers (%d writes)", c.clusterWorkers, len(conc.ms))
	row(concLabel+", writes/s", "%.0f", float64(len(conc.ms))/concWall.Seconds())
	row(concLabel+", p50 latency, ms", "%.2f", percentile(conc.ms, 50))
	row(concLabel+", p99 latency, ms", "%.2f", percentile(conc.ms, 99))
	for j, s := range others {
		where := "the other follower"
		if s == cl.leader {
			where = "the leader"
		}
		label := fmt.Sprintf("PUT return → visible on %s (%d writes)", where, len(vis[j].ms))
		row(label+", p50, ms", "%.2f", percentile(vis[j].ms, 50))
		row(label+", p99, ms", "%.2f", percentile(vis[j].ms, 99))
		row(fmt.Sprintf("writes already visible on %s at the first poll, %%", where), "%.0f", 100*float64(first[j])/float64(max(len(vis[j].ms), 1)))
	}
	fmt.Fprintf(&b, "\n%s; %d CPUs; %s; %d meshreg processes on loopback (Raft over libp2p TCP), writes through followers forwarded to the leader; %s.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), clusterSize, cl.leader.version)
	fmt.Fprintf(&b, "A tag write is the PUT of a %d-byte OCI image manifest under a new tag. Visibility: the node is polled every %v from the moment the PUT returned; the time is to the answer of the first GET serving the tag, so it includes one GET round trip.\n",
		len(w.manifest("seq-0")), c.clusterPoll)
	b.WriteString(commandLine())
	var notes []string
	for _, n := range []string{seq.note("sequential writes"), conc.note("concurrent writes"), puts.note("visibility writes"),
		vis[0].note("visibility on the other follower"), vis[1].note("visibility on the leader")} {
		if n != "" {
			notes = append(notes, n)
		}
	}
	if len(seq.ms)+seq.failed < n || len(conc.ms)+conc.failed < n || len(puts.ms)+puts.failed < n {
		notes = append(notes, fmt.Sprintf("a phase reached -cluster-max-time %v before -cluster-writes %d", maxTime, n))
	}
	if len(notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return b.String(), nil
}
