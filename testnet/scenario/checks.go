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

// watchConvergence measures, from since, how long the cluster takes to
// be whole again (see whole), waiting at most the scenario's converge
// timeout, and records it under after. The runner calls it after the final
// heal, and in the background after every heal, restart or unpause event.
func (r *run) watchConvergence(ctx context.Context, after string, since time.Time) {
	var last string
	ok := poll(ctx, r.s.ConvergeTimeout.Duration, time.Second, func() bool {
		last = r.whole(ctx)
		return last == ""
	})
	c := Convergence{After: after, Converged: ok, Seconds: time.Since(since).Seconds()}
	if !ok {
		c.Last = last
		r.rep.fail("not whole %v after %s: %s", r.s.ConvergeTimeout.Duration, after, last)
	}
	r.repMu.Lock()
	r.rep.Convergence = append(r.rep.Convergence, c)
	r.repMu.Unlock()
	r.log.Info("convergence", "after", after, "converged", ok, "took", time.Since(since).Round(time.Millisecond))
}

// whole returns "" when every running node names the same leader, lists
// every acknowledged tag and reports nothing under-replicated; else the
// first thing that is not so. (Digests and blobs are checked in full by
// check, once.)
func (r *run) whole(ctx context.Context) string {
	if s := r.cl.agreement(ctx, 0); s != "" {
		return s
	}
	want := map[string][]string{} // repo → acknowledged tags
	for _, p := range r.hist.allAcked() {
		want[p.Repo] = append(want[p.Repo], p.Tag)
	}
	for _, n := range r.cl.running() {
		st, err := r.cl.status(ctx, n)
		if err != nil {
			return err.Error()
		}
		if st.Blobs.UnderReplicated != 0 {
			return fmt.Sprintf("%s: %d blobs under-replicated (-1: no repair sweep yet)", n.spec.Name, st.Blobs.UnderReplicated)
		}
		for repo, tags := range want {
			listed, err := listTags(ctx, n, repo)
			if err != nil {
				return err.Error()
			}
			for _, t := range tags {
				if !slices.Contains(listed, t) {
					return fmt.Sprintf("%s does not list the acknowledged %s:%s", n.spec.Name, repo, t)
				}
			}
		}
	}
	return ""
}

// listTags lists the tags of repo on n, sorted.
func listTags(ctx context.Context, n *node, repo string) ([]string, error) {
	code, _, body, err := testnet.NewClient(n.c.URL()).Get(ctx, "/v2/"+repo+"/tags/list?n=100000", nil)
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("%s: tags of %s: HTTP %d %v", n.spec.Name, repo, code, err)
	}
	var list struct{ Tags []string }
	if err := jsonUnmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("%s: tags of %s: %v", n.spec.Name, repo, err)
	}
	slices.Sort(list.Tags)
	return list.Tags, nil
}

// maxListed bounds how many failures of one kind the report lists.
const maxListed = 20

// check runs the final checks and fills the report.
func (r *run) check(ctx context.Context) {
	// A node the runner did not take down but whose container is gone
	// (it crashed) is judged by checkExits; asking it for every push
	// would only spend the run's time on connection errors.
	var running []*node
	for _, n := range r.cl.running() {
		if st, err := n.c.State(ctx); err == nil && !st.Running {
			r.note(fmt.Sprintf("%s is down (exit code %d): not asked for the acknowledged pushes", n.spec.Name, st.ExitCode))
			continue
		}
		running = append(running, n)
	}
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
	if r.s.Previous != "" {
		r.checkUpgrade(ctx, running)
	}
	r.checkExits(ctx)
	r.checkSeries(ctx)
	r.checkExpectations()
	r.fillFigures()
	r.fillMembers(ctx, running)
}

// tagAgreement returns "" when every node lists the same tags of repo.
func (r *run) tagAgreement(ctx context.Context, nodes []*node, repo string) string {
	var want []string
	for i, n := range nodes {
		tags, err := listTags(ctx, n, repo)
		if err != nil {
			return err.Error()
		}
		if i == 0 {
			want = tags
		} else if !slices.Equal(want, tags) {
			return fmt.Sprintf("%s lists %d tags of %s, %s lists %d", n.spec.Name, len(tags), repo, nodes[0].spec.Name, len(want))
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

// checkExpectations judges the scenario's [[expect]] entries.
func (r *run) checkExpectations() {
	for _, x := range r.s.Expect {
		res := ExpectResult{Until: x.Until, Event: x.Event, ServedBy: x.ServedBy, NotServedBy: x.NotServedBy, MinPushesAfter: x.MinPushesAfter}
		var problems []string
		if len(x.ServedBy)+len(x.NotServedBy) > 0 {
			problems = append(problems, r.servedProblems(x, &res)...)
		}
		if x.MinPushesAfter > 0 {
			at, ok := r.done[x.Event]
			until, untilOK := r.done[x.Until]
			if x.Until == "" {
				until, untilOK = time.Now(), true
			}
			if !ok || !untilOK {
				problems = append(problems, "the event (or the until event) was not carried out")
			} else {
				for _, p := range r.hist.allAcked() {
					if p.At.After(at) && p.At.Before(until) {
						res.PushesAfter++
					}
				}
				if res.PushesAfter < x.MinPushesAfter {
					problems = append(problems, fmt.Sprintf("%d pushes acknowledged after it, want at least %d", res.PushesAfter, x.MinPushesAfter))
				}
			}
		}
		res.Problem = strings.Join(problems, "; ")
		res.Passed = res.Problem == ""
		if !res.Passed {
			r.rep.fail("expect %s: %s", x.Event, res.Problem)
		}
		r.rep.Expect = append(r.rep.Expect, res)
	}
}

// servedProblems judges served_by and not_served_by on a measured pull.
func (r *run) servedProblems(x Expect, res *ExpectResult) []string {
	delta, ok := r.measure[x.Event]
	if !ok {
		return []string{"the pull was not measured (it failed or did not run)"}
	}
	res.Served = delta
	var size int64
	for _, m := range r.rep.Measured {
		if m.Label == x.Event {
			size = m.Bytes
		}
	}
	var problems []string
	var by float64
	for _, n := range x.ServedBy {
		by += delta[n]
	}
	// The pulling node serves the manifest itself; blobs are what peers
	// send, so allow the manifest's few bytes.
	if len(x.ServedBy) > 0 && by < float64(size)*0.9 {
		problems = append(problems, fmt.Sprintf("%v served %.0f bytes during the pull of %d", x.ServedBy, by, size))
	}
	for _, n := range x.NotServedBy {
		if delta[n] > 0 {
			problems = append(problems, fmt.Sprintf("%s served %.0f bytes but should have served none", n, delta[n]))
		}
	}
	return problems
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
	for _, side := range []string{"whole", "rest", "cut-off"} {
		if st := h.sides[side]; st != nil {
			r.rep.PushesBySide = append(r.rep.PushesBySide, *st)
		}
	}
	r.rep.PullLatency = map[string]Latency{}
	for region, ls := range h.pullLatency {
		r.rep.PullLatency[region] = latencyOf(ls)
	}
	h.mu.Unlock()
	order := map[string]int{}
	for i, n := range r.cl.nodes {
		order[n.spec.Name] = i
	}
	defer func() {
		slices.SortFunc(r.rep.Nodes, func(a, b NodeReport) int { return order[a.Name] - order[b.Name] })
	}()
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

// fillMembers records the Raft configuration as the running nodes see it
// at the end: after churn, members that left for good should be gone
// (after --dead-server-timeout).
func (r *run) fillMembers(ctx context.Context, running []*node) {
	for _, n := range running {
		st, err := r.cl.status(ctx, n)
		if err != nil || st.Raft.State != "Leader" {
			continue
		}
		r.rep.Members = Members{Seen: len(st.Raft.Members), Voters: st.Voters(), Running: len(running)}
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
