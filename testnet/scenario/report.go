package scenario

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Report is the outcome of one scenario run, written as report.json and
// report.md.
type Report struct {
	mu       sync.Mutex
	Scenario string    `json:"scenario"`
	RunID    string    `json:"run_id"`
	Started  time.Time `json:"started"`
	Duration string    `json:"duration"`
	Passed   bool      `json:"passed"`
	Failures []string  `json:"failures"`
	Notes    []string  `json:"notes,omitempty"`

	Pushes Counts `json:"pushes"`
	Pulls  Counts `json:"pulls"`
	// PushesBySide splits the workload's pushes by partition side.
	PushesBySide []SideStats `json:"pushes_by_side"`
	// Checked is false when the run ended before its checks (timeout,
	// interrupt, setup failure): then the figures below prove nothing.
	Checked bool `json:"checked"`
	// BytesLost is the bytes of acknowledged pushes that some live node
	// could not serve in full at the end: it must be 0.
	BytesLost  int64 `json:"bytes_lost"`
	PushesLost int   `json:"pushes_lost"`
	// Converged: the cluster was whole again after every heal; and
	// ConvergeSeconds is the longest it took.
	Converged       bool               `json:"converged"`
	ConvergeSeconds float64            `json:"converge_seconds"`
	Convergence     []Convergence      `json:"convergence"`
	Members         Members            `json:"members"`
	Elections       Elections          `json:"elections"`
	Nodes           []NodeReport       `json:"nodes"`
	PullLatency     map[string]Latency `json:"pull_latency_by_region"`
	Events          []EventReport      `json:"events"`
	Docker          []DockerStep       `json:"docker_steps,omitempty"`
	Measured        []MeasuredPull     `json:"measured_pulls,omitempty"`
	Expect          []ExpectResult     `json:"expect,omitempty"`
	// Hostile is every attempt of the hostile actions and what it got.
	Hostile []HostileResult `json:"hostile,omitempty"`
	// Upgrade is the rolling upgrade of a scenario with a previous
	// revision.
	Upgrade *UpgradeReport `json:"upgrade,omitempty"`
	// Series are the nodes' /metrics series counts, at the start and end.
	Series []SeriesCount `json:"metrics_series,omitempty"`
}

// Convergence is how long the cluster took to be whole (one leader for
// all, every acknowledged tag listed everywhere, nothing under-replicated)
// after a heal, restart or unpause.
type Convergence struct {
	After     string  `json:"after"`
	Converged bool    `json:"converged"`
	Seconds   float64 `json:"seconds"`
	Last      string  `json:"last_problem,omitempty"`
}

// SideStats are the workload's pushes to nodes on one side of a
// partition (see cluster.side), with a few of their errors.
type SideStats struct {
	Side         string   `json:"side"`
	Attempted    int      `json:"attempted"`
	Acknowledged int      `json:"acknowledged"`
	Failed       int      `json:"failed"`
	MaxSeconds   float64  `json:"max_seconds"`
	Errors       []string `json:"errors,omitempty"`
}

// Counts of pushes or pulls.
type Counts struct {
	Attempted    int   `json:"attempted"`
	Acknowledged int   `json:"acknowledged"`
	Failed       int   `json:"failed"`
	Bytes        int64 `json:"bytes"` // of the acknowledged ones
}

// Members is the Raft configuration in the leader's view at the end,
// beside the number of running nodes.
type Members struct {
	Seen    int `json:"members"`
	Voters  int `json:"voters"`
	Running int `json:"running_nodes"`
}

// Elections are what polling every node's status saw.
type Elections struct {
	TermAtStart   uint64 `json:"term_at_start"`
	TermAtEnd     uint64 `json:"term_at_end"`
	TermIncreases int    `json:"term_increases"`
	LeaderChanges int    `json:"leader_changes"`
}

// NodeReport is one node at the end of the run.
type NodeReport struct {
	Name         string `json:"name"`
	Region       string `json:"region"`
	Zone         string `json:"zone"`
	State        string `json:"state"`
	ExitCode     int    `json:"exit_code"`
	BytesServed  int64  `json:"bytes_served_to_peers"`
	BytesFetched int64  `json:"bytes_fetched_from_peers"`
}

// Latency of the good pulls of one region (manifest and every blob).
type Latency struct {
	Count int     `json:"count"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
}

// EventReport is one event as carried out.
type EventReport struct {
	At      string   `json:"at"`
	Action  string   `json:"action"`
	Targets []string `json:"targets,omitempty"`
	Took    string   `json:"took"`
	Error   string   `json:"error,omitempty"`
}

// DockerStep is one round trip of the Docker engine.
type DockerStep struct {
	From    string  `json:"from"`
	To      string  `json:"to"`
	OK      bool    `json:"ok"`
	ImageID string  `json:"image_id"`
	Digest  string  `json:"digest"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error,omitempty"`
}

// MeasuredPull is a pull event with the bytes every node served to peers
// during it.
type MeasuredPull struct {
	Label            string             `json:"label"`
	Node             string             `json:"node"`
	Bytes            int64              `json:"bytes"`
	Seconds          float64            `json:"seconds"`
	ServedDuring     map[string]float64 `json:"served_during"`
	CrossRegionBytes int64              `json:"cross_region_bytes"` // served by nodes of other regions
}

// ExpectResult is one [[expect]] judged.
type ExpectResult struct {
	Event       string             `json:"event"`
	ServedBy    []string           `json:"served_by,omitempty"`
	NotServedBy []string           `json:"not_served_by,omitempty"`
	Served      map[string]float64 `json:"served,omitempty"`
	// MinPushesAfter and PushesAfter: writes acknowledged after the event.
	MinPushesAfter int    `json:"min_pushes_after,omitempty"`
	PushesAfter    int    `json:"pushes_after,omitempty"`
	Until          string `json:"until,omitempty"`
	Passed         bool   `json:"passed"`
	Problem        string `json:"problem,omitempty"`
}

func (r *Report) fail(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Failures = append(r.Failures, fmt.Sprintf(format, a...))
}

func (r *Report) write(dir string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.Markdown()), 0o644)
}

// Markdown renders the report for people.
func (r *Report) Markdown() string {
	var b strings.Builder
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "# testnet scenario %s: %s\n\nrun %s, started %s, took %s\n\n", r.Scenario, verdict, r.RunID, r.Started.Format(time.RFC3339), r.Duration)
	if len(r.Failures) > 0 {
		b.WriteString("## Failures\n\n")
		for _, f := range r.Failures {
			fmt.Fprintf(&b, "- %s\n", f)
		}
		b.WriteString("\n")
	}
	if len(r.Notes) > 0 {
		b.WriteString("## Notes\n\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	conv := "not converged"
	if r.Converged {
		conv = fmt.Sprintf("%.1f s", r.ConvergeSeconds)
	}
	b.WriteString("## Figures\n\n| | attempted | acknowledged | failed | bytes acknowledged |\n| --- | ---: | ---: | ---: | ---: |\n")
	fmt.Fprintf(&b, "| pushes | %d | %d | %d | %d |\n", r.Pushes.Attempted, r.Pushes.Acknowledged, r.Pushes.Failed, r.Pushes.Bytes)
	fmt.Fprintf(&b, "| pulls | %d | %d | %d | %d |\n\n", r.Pulls.Attempted, r.Pulls.Acknowledged, r.Pulls.Failed, r.Pulls.Bytes)
	if len(r.PushesBySide) > 0 {
		b.WriteString("| workload pushes to nodes | attempted | acknowledged | failed | slowest s | sample errors |\n| --- | ---: | ---: | ---: | ---: | --- |\n")
		for _, s := range r.PushesBySide {
			fmt.Fprintf(&b, "| %s | %d | %d | %d | %.1f | %s |\n", s.Side, s.Attempted, s.Acknowledged, s.Failed, s.MaxSeconds, strings.ReplaceAll(strings.Join(s.Errors, "<br>"), "|", "\\|"))
		}
		b.WriteString("\n")
	}
	if r.Checked {
		fmt.Fprintf(&b, "- bytes lost: **%d** (%d acknowledged pushes not served in full by every live node)\n", r.BytesLost, r.PushesLost)
	} else {
		b.WriteString("- bytes lost: **not checked** (the run ended before its checks)\n")
	}
	fmt.Fprintf(&b, "- time to converge after heal: %s (the longest of:", conv)
	for _, c := range r.Convergence {
		fmt.Fprintf(&b, " %.1f s after %s;", c.Seconds, c.After)
	}
	b.WriteString(")\n")
	fmt.Fprintf(&b, "- Raft members at the end (leader's view): %d, %d voters; %d nodes running\n", r.Members.Seen, r.Members.Voters, r.Members.Running)
	fmt.Fprintf(&b, "- elections: term %d → %d (%d increases seen), %d leader changes\n\n",
		r.Elections.TermAtStart, r.Elections.TermAtEnd, r.Elections.TermIncreases, r.Elections.LeaderChanges)
	b.WriteString("| node | region | zone | state | exit | bytes served to peers | bytes fetched from peers |\n| --- | --- | --- | --- | ---: | ---: | ---: |\n")
	for _, n := range r.Nodes {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %d | %d | %d |\n", n.Name, n.Region, n.Zone, n.State, n.ExitCode, n.BytesServed, n.BytesFetched)
	}
	regions := make([]string, 0, len(r.PullLatency))
	for k := range r.PullLatency {
		regions = append(regions, k)
	}
	slices.Sort(regions)
	b.WriteString("\n| region | good pulls | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: |\n")
	for _, k := range regions {
		l := r.PullLatency[k]
		fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f |\n", k, l.Count, l.P50Ms, l.P99Ms)
	}
	if len(r.Measured) > 0 {
		b.WriteString("\n## Measured pulls\n\n| label | through | bytes | seconds | cross-region bytes served | served by node |\n| --- | --- | ---: | ---: | ---: | --- |\n")
		for _, m := range r.Measured {
			names := make([]string, 0, len(m.ServedDuring))
			for k := range m.ServedDuring {
				names = append(names, k)
			}
			slices.Sort(names)
			var parts []string
			for _, k := range names {
				parts = append(parts, fmt.Sprintf("%s=%.0f", k, m.ServedDuring[k]))
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %.2f | %d | %s |\n", m.Label, m.Node, m.Bytes, m.Seconds, m.CrossRegionBytes, strings.Join(parts, " "))
		}
	}
	if len(r.Expect) > 0 {
		b.WriteString("\n## Expectations\n\n")
		for _, x := range r.Expect {
			mark := "pass"
			if !x.Passed {
				mark = "FAIL: " + x.Problem
			}
			var what []string
			if len(x.ServedBy)+len(x.NotServedBy) > 0 {
				what = append(what, fmt.Sprintf("served by %v, not by %v", x.ServedBy, x.NotServedBy))
			}
			if x.MinPushesAfter > 0 {
				until := ""
				if x.Until != "" {
					until = " until " + x.Until
				}
				what = append(what, fmt.Sprintf("%d pushes acknowledged after it%s (at least %d)", x.PushesAfter, until, x.MinPushesAfter))
			}
			fmt.Fprintf(&b, "- %s: %s: %s\n", x.Event, strings.Join(what, "; "), mark)
		}
	}
	if len(r.Docker) > 0 {
		b.WriteString("\n## Docker engine steps\n\n| push to | pull through | ok | seconds | digest | error |\n| --- | --- | --- | ---: | --- | --- |\n")
		for _, d := range r.Docker {
			fmt.Fprintf(&b, "| %s | %s | %t | %.1f | %s | %s |\n", d.From, d.To, d.OK, d.Seconds, d.Digest, d.Error)
		}
	}
	r.hostileMarkdown(&b)
	r.upgradeMarkdown(&b)
	b.WriteString("\n## Events\n\n(at: since the load began)\n\n| at | action | targets | took | error |\n| --- | --- | --- | --- | --- |\n")
	for _, e := range r.Events {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", e.At, e.Action, strings.Join(e.Targets, ", "), e.Took, e.Error)
	}
	return b.String()
}
