package scenario

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/meshreg/meshreg/testnet"
)

// converge waits, after the heal, until the cluster is whole again: every
// running node names the same leader, serves every acknowledged tag with
// its digest, and reports nothing under-replicated. The time it took is
// the report's convergence time.
func (r *run) converge(ctx context.Context, healedAt time.Time) {
	var last string
	ok := poll(ctx, r.s.ConvergeTimeout.Duration, time.Second, func() bool {
		last = r.whole(ctx)
		return last == ""
	})
	if !ok {
		r.rep.fail("not converged %v after the heal: %s", r.s.ConvergeTimeout.Duration, last)
		return
	}
	r.rep.ConvergeSeconds = time.Since(healedAt).Seconds()
	r.rep.Converged = true
	r.log.Info("converged after heal", "took", time.Since(healedAt).Round(time.Millisecond))
}

// whole returns "" when the running nodes agree and nothing is
// under-replicated, else the first thing that is not so.
func (r *run) whole(ctx context.Context) string {
	if s := r.cl.agreement(ctx, 0); s != "" {
		return s
	}
	for _, n := range r.cl.running() {
		st, err := r.cl.status(ctx, n)
		if err != nil {
			return err.Error()
		}
		if st.Blobs.UnderReplicated != 0 {
			return fmt.Sprintf("%s: %d blobs under-replicated (-1: no repair sweep yet)", n.spec.Name, st.Blobs.UnderReplicated)
		}
		c := testnet.NewClient(n.c.URL())
		for _, p := range r.hist.allAcked() {
			_, _, d, err := c.GetManifest(ctx, p.Repo, p.Tag)
			if err != nil || d != p.Manifest.String() {
				return fmt.Sprintf("%s: %s:%s is %q (%v), acknowledged as %s", n.spec.Name, p.Repo, p.Tag, d, err, p.Manifest)
			}
		}
	}
	return ""
}

// maxListed bounds how many failures of one kind the report lists.
const maxListed = 20

// check runs the final checks and fills the report.
func (r *run) check(ctx context.Context) {
	running := r.cl.running()
	// Every acknowledged push, in full, from every running node.
	acked := r.hist.allAcked()
	listed := 0
	for _, p := range acked {
		lost := false
		for _, n := range running {
			if _, err := pullImage(ctx, n, p); err != nil {
				lost = true
				if listed++; listed <= maxListed {
					r.rep.fail("acknowledged push %s:%s (to %s) not served in full: %v", p.Repo, p.Tag, p.Node, err)
				}
			}
		}
		if lost {
			r.rep.BytesLost += p.Bytes
			r.rep.PushesLost++
		}
	}
	if listed > maxListed {
		r.rep.fail("… and %d more unserved pushes", listed-maxListed)
	}
	// All running nodes list the same tags in every repository.
	repos := map[string]bool{}
	for _, p := range acked {
		repos[p.Repo] = true
	}
	for repo := range repos {
		if s := r.tagAgreement(ctx, running, repo); s != "" {
			r.rep.fail("tags disagree: %s", s)
		}
	}
	r.checkExits(ctx)
	r.checkExpectations()
	r.fillFigures()
}

// tagAgreement returns "" when every node lists the same tags of repo.
func (r *run) tagAgreement(ctx context.Context, nodes []*node, repo string) string {
	var want []string
	for i, n := range nodes {
		code, _, body, err := testnet.NewClient(n.c.URL()).Get(ctx, "/v2/"+repo+"/tags/list?n=100000", nil)
		if err != nil || code != http.StatusOK {
			return fmt.Sprintf("%s: tags of %s: HTTP %d %v", n.spec.Name, repo, code, err)
		}
		var list struct{ Tags []string }
		if err := jsonUnmarshal(body, &list); err != nil {
			return fmt.Sprintf("%s: tags of %s: %v", n.spec.Name, repo, err)
		}
		slices.Sort(list.Tags)
		if i == 0 {
			want = list.Tags
		} else if !slices.Equal(want, list.Tags) {
			return fmt.Sprintf("%s lists %d tags of %s, %s lists %d", n.spec.Name, len(list.Tags), repo, nodes[0].spec.Name, len(want))
		}
	}
	return ""
}

// checkExits fails the run for every container that is down without the
// runner having put it down, and for a graceful stop that did not exit 0.
func (r *run) checkExits(ctx context.Context) {
	for _, n := range r.cl.started() {
		st, err := n.c.State(ctx)
		if err != nil {
			r.rep.fail("%v", err)
			continue
		}
		nr := r.nodeReport(n)
		nr.ExitCode = st.ExitCode
		switch {
		case st.Running:
		case st.Expected == "":
			r.rep.fail("node %s exited on its own with code %d", n.spec.Name, st.ExitCode)
		case st.Expected == "stopped" && st.ExitCode != 0:
			r.rep.fail("node %s exited with code %d after a graceful stop, want 0", n.spec.Name, st.ExitCode)
		}
	}
}

// crashLine returns the first line of logs showing a Go panic or fatal
// runtime error, or "".
func crashLine(logs string) string {
	for line := range strings.Lines(logs) {
		if strings.HasPrefix(line, "panic:") || strings.HasPrefix(line, "fatal error:") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// checkExpectations judges the scenario's [[expect]] entries on the
// measured pulls.
func (r *run) checkExpectations() {
	for _, x := range r.s.Expect {
		delta, ok := r.measure[x.Event]
		res := ExpectResult{Event: x.Event, ServedBy: x.ServedBy, NotServedBy: x.NotServedBy, Served: delta}
		var size int64
		for _, m := range r.rep.Measured {
			if m.Label == x.Event {
				size = m.Bytes
			}
		}
		switch {
		case !ok:
			res.Problem = "the pull was not measured (it failed or did not run)"
		default:
			var by float64
			for _, n := range x.ServedBy {
				by += delta[n]
			}
			// The manifest is served by the pulling node itself; blobs are
			// what peers send.
			if by < float64(size)*0.9 {
				res.Problem = fmt.Sprintf("%v served %.0f bytes during the pull of %d", x.ServedBy, by, size)
			}
			for _, n := range x.NotServedBy {
				if delta[n] > 0 {
					res.Problem += fmt.Sprintf("; %s served %.0f bytes but should have served none", n, delta[n])
				}
			}
		}
		res.Passed = res.Problem == ""
		if !res.Passed {
			r.rep.fail("expect %s: %s", x.Event, strings.TrimPrefix(res.Problem, "; "))
		}
		r.rep.Expect = append(r.rep.Expect, res)
	}
}

// nodeReport returns the report entry of n, making it if needed.
func (r *run) nodeReport(n *node) *NodeReport {
	for i := range r.rep.Nodes {
		if r.rep.Nodes[i].Name == n.spec.Name {
			return &r.rep.Nodes[i]
		}
	}
	r.rep.Nodes = append(r.rep.Nodes, NodeReport{Name: n.spec.Name, Region: n.spec.Region, Zone: n.spec.Zone})
	return &r.rep.Nodes[len(r.rep.Nodes)-1]
}

// fillFigures copies the counts, latencies and poller observations into
// the report.
func (r *run) fillFigures() {
	h := r.hist
	h.mu.Lock()
	r.rep.Pushes, r.rep.Pulls = h.pushes, h.pulls
	r.rep.PullLatency = map[string]Latency{}
	for region, ls := range h.pullLatency {
		r.rep.PullLatency[region] = latencyOf(ls)
	}
	h.mu.Unlock()
	o := r.obs
	o.mu.Lock()
	defer o.mu.Unlock()
	r.rep.Elections = Elections{TermAtStart: o.termStart, TermAtEnd: o.maxTerm, TermIncreases: o.termUps, LeaderChanges: o.leaderChg}
	for _, n := range r.cl.nodes {
		if r.cl.stateOf(n) == stateNotStarted {
			continue
		}
		nr := r.nodeReport(n)
		nr.State = r.cl.stateOf(n)
		if c := o.counters[n.spec.Name+" meshreg_peer_bytes_served_total"]; c != nil {
			nr.BytesServed = int64(c.total())
		}
		if c := o.counters[n.spec.Name+" meshreg_peer_bytes_fetched_total"]; c != nil {
			nr.BytesFetched = int64(c.total())
		}
	}
}

func latencyOf(ls []time.Duration) Latency {
	s := slices.Clone(ls)
	slices.Sort(s)
	q := func(p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		i := int(p * float64(len(s)-1))
		return float64(s[i].Microseconds()) / 1000
	}
	return Latency{Count: len(s), P50Ms: q(0.50), P99Ms: q(0.99)}
}
