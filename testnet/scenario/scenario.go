// Package scenario runs a meshreg testnet declared as data: a TOML file
// names the nodes (region, zone, flags), the links between regions, a
// bounded workload, perturbations at given times and scenario-specific
// expectations. The Runner starts the nodes as containers (package
// containers), runs workload and perturbations together, heals, and then
// checks the cluster only through its public API: every acknowledged push
// is served by every live node, the nodes agree on every tag, nothing is
// under-replicated, no node crashed. It writes a report as JSON and
// Markdown.
//
// A scenario file:
//
//	name = "smoke"
//	timeout = "2m"            # the whole run, checks included
//	converge_timeout = "60s"  # how long the healed cluster may take to agree
//	replicas = 2
//	start = "join"            # or "bootstrap-expect" (every node names the others)
//	args = ["--dead-server-timeout", "15s"]   # given to every node
//	previous = "3ff7f87…"     # 40-hex git revision: the nodes start with its
//	                          # image; "upgrade" events move them to the current one
//
//	[[nodes]]
//	name = "n1"
//	region = "r1"
//	zone = "z1"
//	later = false             # true: started by an "add" event, not at start
//
//	[[links]]                 # shaping between two regions, both ways
//	regions = ["r1", "r2"]
//	rate = "20mbit"
//	latency = "80ms"          # needs sch_netem; reported when not applied
//
//	[workload]                # optional; every part bounded
//	duration = "20s"
//	repo = "testnet/smoke"    # default testnet/<name>
//	[workload.push]           # images of random layers to random running nodes
//	concurrency = 2
//	count = 40
//	layers = 2
//	layer_size = "128KiB"
//	interval = "100ms"
//	timeout = "60s"           # a client gives up on one push after this
//	[workload.pull]           # acknowledged pushes through other running nodes
//	concurrency = 2
//	count = 80
//	interval = "50ms"
//
//	[[events]]                # perturbations and scripted steps, in time order,
//	at = "5s"                 # from the load's start (or when the previous is done)
//	action = "kill"           # see Actions
//	target = "leader"         # a node name or a role: see roleTargets
//	label = "kill-leader"     # for [[expect]]
//
//	[[after_heal]]            # steps run once everything is healed
//	action = "docker"
//	target = "n1"
//	to = "n3"
//
//	[[expect]]                # scenario-specific checks on labelled events
//	event = "second-far-pull" # a pull: who served its bytes to peers
//	served_by = ["b1"]
//	not_served_by = ["a1", "a2"]
//
//	[[expect]]
//	event = "kill-leader"     # any event: writes acknowledged after it
//	until = "restart"         # (optional) and before this labelled event
//	min_pushes_after = 50
package scenario

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/meshreg/meshreg/internal/bytesize"
)

// Scenario is one parsed scenario file.
type Scenario struct {
	Name            string     `toml:"name"`
	Timeout         Duration   `toml:"timeout"`
	ConvergeTimeout Duration   `toml:"converge_timeout"`
	Replicas        int        `toml:"replicas"`
	Start           string     `toml:"start"` // "join" (default) or "bootstrap-expect"
	Args            []string   `toml:"args"`
	Nodes           []NodeSpec `toml:"nodes"`
	Links           []Link     `toml:"links"`
	Workload        Workload   `toml:"workload"`
	Events          []Event    `toml:"events"`
	AfterHeal       []Event    `toml:"after_heal"`
	Expect          []Expect   `toml:"expect"`
	// Previous is the full git revision of the release the nodes start
	// with (see Options.PreviousImage); "upgrade" events replace each
	// node's container by one of the current image on the same data.
	Previous string `toml:"previous"`
}

// NodeSpec declares one node.
type NodeSpec struct {
	Name   string   `toml:"name"`
	Region string   `toml:"region"`
	Zone   string   `toml:"zone"`
	Args   []string `toml:"args"`
	Later  bool     `toml:"later"`
}

// Link shapes the traffic between two regions, both ways.
type Link struct {
	Regions []string `toml:"regions"`
	Rate    string   `toml:"rate"`
	Latency Duration `toml:"latency"`
}

// Workload is the background load; every part is bounded in count and
// time.
type Workload struct {
	Duration Duration `toml:"duration"`
	Push     PushLoad `toml:"push"`
	Pull     PullLoad `toml:"pull"`
	Repo     string   `toml:"repo"` // default testnet/<name>
}

// PushLoad pushes generated images (layers × layer_size random bytes and
// a config) to random live nodes.
type PushLoad struct {
	Concurrency int      `toml:"concurrency"`
	Count       int      `toml:"count"`
	Layers      int      `toml:"layers"`
	LayerSize   Size     `toml:"layer_size"`
	Interval    Duration `toml:"interval"`
	// Timeout is how long one push may take before the pusher gives up
	// on it (not acknowledged) and tries another node, as a client would;
	// default 60s.
	Timeout Duration `toml:"timeout"`
}

// PullLoad pulls acknowledged pushes through random live nodes other than
// the one pushed to.
type PullLoad struct {
	Concurrency int      `toml:"concurrency"`
	Count       int      `toml:"count"`
	Interval    Duration `toml:"interval"`
}

// Actions are the closed list of event actions.
var Actions = []string{
	"kill",      // SIGKILL the target
	"stop",      // SIGTERM, graceful
	"restart",   // start a killed/stopped target again; a running one is stopped gracefully first
	"pause",     // freeze the target
	"unpause",   // thaw it
	"partition", // cut nodes (a set) from every other node
	"heal",      // undo every partition and pause
	"add",       // start a node declared with later = true, joining a live node
	"remove",    // remove the target for good, data included
	"push",      // push a named image (layers, layer_size) to the target
	"pull",      // pull a named image through the target, measuring bytes served by every node
	"docker",    // the host's Docker engine pushes to target, pulls back through to
	"wait",      // do nothing until at; a marker
	// The hostile actions (see hostile.go): an attacker with no
	// credentials on the scenario's network.
	"intrude",      // a libp2p host that is not a member tries every cluster protocol
	"flood",        // count upload POSTs to target within for
	"slow-readers", // count GETs of image's largest blob through target, unread for for
	"junk-methods", // count requests with made-up HTTP methods within for
	"oversized",    // requests past every size a client may choose
	// See upgrade.go: needs previous.
	"upgrade", // stop the target gracefully, start the current image on its data volume, wait until it is a member again
}

// roleTargets are the event targets that name a node by its role when
// the event runs: the leader, a follower, any running node, a running
// node outside the cut-off set of the current partition, the first node
// down (killed or stopped), the first paused node.
var roleTargets = []string{"leader", "follower", "any", "uncut", "down", "paused"}

// Event is one perturbation or scripted step.
type Event struct {
	At        Duration `toml:"at"`
	Action    string   `toml:"action"`
	Target    string   `toml:"target"`
	Nodes     []string `toml:"nodes"` // partition: the cut-off set (names, "leader", "follower")
	To        string   `toml:"to"`    // docker: pull back through this node
	Image     string   `toml:"image"` // push, pull: the image's name (a tag)
	Layers    int      `toml:"layers"`
	LayerSize Size     `toml:"layer_size"`
	Label     string   `toml:"label"` // the name expectations refer to (a pull's defaults to its image)
	Count     int      `toml:"count"` // flood, slow-readers, junk-methods: how many requests
	For       Duration `toml:"for"`   // flood, junk-methods: within; slow-readers: how long they stall
}

// Expect is a scenario-specific check on a labelled event. On a pull:
// during it, the nodes of served_by sent at least the image's bytes to
// peers (together), and each node of not_served_by sent none. On any
// event: at least min_pushes_after pushes were acknowledged after it was
// carried out (the cluster kept taking writes) and, if until names a
// later event, before that one was.
type Expect struct {
	Event          string   `toml:"event"`
	ServedBy       []string `toml:"served_by"`
	NotServedBy    []string `toml:"not_served_by"`
	MinPushesAfter int      `toml:"min_pushes_after"`
	Until          string   `toml:"until"`
}

// Duration is a time.Duration written as "1m30s" in TOML.
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: want e.g. \"90s\" or \"1m30s\"", b)
	}
	d.Duration = v
	return nil
}

// Size is a byte count written as "128KiB", "8MiB" or a plain number.
type Size int64

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := bytesize.Parse(string(b))
	if err != nil {
		return fmt.Errorf("size %q: want e.g. \"128KiB\", \"8MiB\" or a byte count", b)
	}
	*s = Size(n)
	return nil
}

// Load reads and validates a scenario file.
func Load(path string) (*Scenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	defer f.Close()
	s, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes a scenario, applies defaults and validates it. Unknown
// keys are errors: a misspelt key must not silently run a weaker test.
func Parse(r io.Reader) (*Scenario, error) {
	var s Scenario
	md, err := toml.NewDecoder(r).Decode(&s)
	if err != nil {
		return nil, err
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return nil, fmt.Errorf("unknown keys: %s", strings.Join(keys, ", "))
	}
	s.defaults()
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *Scenario) defaults() {
	if s.Timeout.Duration == 0 {
		s.Timeout.Duration = 5 * time.Minute
	}
	if s.ConvergeTimeout.Duration == 0 {
		s.ConvergeTimeout.Duration = 90 * time.Second
	}
	if s.Replicas == 0 {
		s.Replicas = 2
	}
	if s.Start == "" {
		s.Start = "join"
	}
	if s.Workload.Repo == "" {
		s.Workload.Repo = "testnet/" + s.Name
	}
	w := &s.Workload
	if w.Push.Count > 0 {
		w.Push.Concurrency = max(w.Push.Concurrency, 1)
		w.Push.Layers = max(w.Push.Layers, 1)
		if w.Push.LayerSize == 0 {
			w.Push.LayerSize = 64 << 10
		}
		if w.Push.Timeout.Duration == 0 {
			w.Push.Timeout.Duration = time.Minute
		}
	}
	if w.Pull.Count > 0 {
		w.Pull.Concurrency = max(w.Pull.Concurrency, 1)
	}
	for i := range s.Events {
		s.Events[i].defaults()
	}
	for i := range s.AfterHeal {
		s.AfterHeal[i].defaults()
	}
}

func (e *Event) defaults() {
	if e.Action == "push" {
		e.Layers = max(e.Layers, 1)
		if e.LayerSize == 0 {
			e.LayerSize = 1 << 20
		}
	}
	if e.Action == "pull" && e.Label == "" {
		e.Label = e.Image
	}
}

// Limits keep every run bounded whatever a file says.
const (
	maxNodes     = 16
	maxPushes    = 5000
	maxPulls     = 20000
	maxImageSize = 1 << 30
	maxTimeout   = 30 * time.Minute
)

// fullRevision is a git commit id spelled out: an abbreviation could
// become ambiguous as history grows.
var fullRevision = regexp.MustCompile(`^[0-9a-f]{40}$`)

// Validate reports every problem of the scenario at once.
func (s *Scenario) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.Name == "" {
		bad("name: missing")
	}
	if s.Timeout.Duration > maxTimeout {
		bad("timeout %v: at most %v", s.Timeout.Duration, maxTimeout)
	}
	if s.Replicas < 1 {
		bad("replicas %d: at least 1", s.Replicas)
	}
	if s.Previous != "" && !fullRevision.MatchString(s.Previous) {
		bad("previous %q: the full 40-hex git revision (git rev-parse REV)", s.Previous)
	}
	if s.Start != "join" && s.Start != "bootstrap-expect" {
		bad("start %q: \"join\" or \"bootstrap-expect\"", s.Start)
	}
	names := map[string]NodeSpec{}
	regions := map[string]bool{}
	initial := 0
	for i, n := range s.Nodes {
		switch {
		case n.Name == "":
			bad("nodes[%d]: name missing", i)
		case slices.Contains(roleTargets, n.Name):
			bad("nodes[%d]: %q is reserved for event targets", i, n.Name)
		case names[n.Name].Name != "":
			bad("nodes[%d]: name %q used twice", i, n.Name)
		}
		if n.Region == "" || n.Zone == "" {
			bad("node %q: region and zone are required", n.Name)
		}
		names[n.Name] = n
		regions[n.Region] = true
		if !n.Later {
			initial++
		}
	}
	if initial == 0 {
		bad("nodes: at least one node must start at the beginning (later = false)")
	}
	if len(s.Nodes) > maxNodes {
		bad("nodes: %d, at most %d", len(s.Nodes), maxNodes)
	}
	if s.Start == "bootstrap-expect" && initial < len(s.Nodes) {
		bad("start = \"bootstrap-expect\" cannot have later nodes")
	}
	linked := map[string]bool{}
	for i, l := range s.Links {
		if len(l.Regions) != 2 || l.Regions[0] == l.Regions[1] {
			bad("links[%d]: regions must name two different regions", i)
			continue
		}
		for _, r := range l.Regions {
			if !regions[r] {
				bad("links[%d]: region %q has no node", i, r)
			}
			if linked[r] {
				bad("links[%d]: region %q is in two links; one link per region is supported", i, r)
			}
			linked[r] = true
		}
		if l.Rate == "" {
			bad("links[%d]: rate missing (tc syntax, e.g. \"20mbit\")", i)
		}
	}
	w := s.Workload
	if (w.Push.Count > 0 || w.Pull.Count > 0) && w.Duration.Duration <= 0 {
		bad("workload: duration required to bound the pushes and pulls")
	}
	if w.Push.Count > maxPushes || w.Pull.Count > maxPulls {
		bad("workload: at most %d pushes and %d pulls", maxPushes, maxPulls)
	}
	if int64(w.Push.Layers)*int64(w.Push.LayerSize) > maxImageSize {
		bad("workload.push: images of %d × %d bytes exceed %d", w.Push.Layers, w.Push.LayerSize, maxImageSize)
	}
	if w.Pull.Count > 0 && w.Push.Count == 0 {
		bad("workload.pull: pulls need pushes to pull")
	}
	images := map[string]bool{}
	labels := map[string]string{} // label → action
	check := func(where string, events []Event, timed bool) {
		var last time.Duration
		for i, e := range events {
			at := fmt.Sprintf("%s[%d] (%s)", where, i, e.Action)
			if !slices.Contains(Actions, e.Action) {
				bad("%s: unknown action %q; one of %s", at, e.Action, strings.Join(Actions, ", "))
				continue
			}
			if timed && e.At.Duration < last {
				bad("%s: at %v comes before the previous event's %v; list events in time order", at, e.At.Duration, last)
			}
			last = e.At.Duration
			if e.Label != "" {
				if labels[e.Label] != "" {
					bad("%s: label %q used twice", at, e.Label)
				}
				labels[e.Label] = e.Action
			}
			if timed && e.At.Duration >= s.Timeout.Duration {
				bad("%s: at %v is past the timeout %v", at, e.At.Duration, s.Timeout.Duration)
			}
			target := func(t string) {
				if slices.Contains(roleTargets, t) {
					return
				}
				if names[t].Name == "" {
					bad("%s: node %q not declared", at, t)
				}
			}
			switch e.Action {
			case "partition":
				if len(e.Nodes) == 0 {
					bad("%s: nodes (the set cut off) missing", at)
				}
				for _, n := range e.Nodes {
					target(n)
				}
			case "heal", "wait", "intrude":
			case "add":
				if !names[e.Target].Later {
					bad("%s: target %q must be a node declared with later = true", at, e.Target)
				}
			case "docker":
				target(e.Target)
				if e.To == "" {
					bad("%s: to (the node to pull back through) missing", at)
				} else {
					target(e.To)
				}
			default:
				if e.Target == "" {
					bad("%s: target missing", at)
				} else {
					target(e.Target)
				}
			}
			switch e.Action {
			case "upgrade":
				if s.Previous == "" {
					bad("%s: needs previous (the revision the nodes start with)", at)
				}
			case "push":
				if e.Image == "" {
					bad("%s: image (its name) missing", at)
				}
				images[e.Image] = true
				if int64(e.Layers)*int64(e.LayerSize) > maxImageSize {
					bad("%s: image larger than %d bytes", at, maxImageSize)
				}
			case "pull", "slow-readers":
				if !images[e.Image] {
					bad("%s: image %q is not pushed by an earlier push event", at, e.Image)
				}
			}
			switch limit := map[string]int{"flood": maxFloodCount, "slow-readers": maxSlowReaders, "junk-methods": maxJunkMethods}[e.Action]; {
			case limit == 0:
			case e.Count <= 0 || e.Count > limit:
				bad("%s: count %d: between 1 and %d", at, e.Count, limit)
			case e.For.Duration <= 0 || e.For.Duration > maxHostileFor:
				bad("%s: for %v: positive, at most %v", at, e.For.Duration, maxHostileFor)
			}
		}
	}
	check("events", s.Events, true)
	check("after_heal", s.AfterHeal, false)
	for i, x := range s.Expect {
		served := len(x.ServedBy)+len(x.NotServedBy) > 0
		switch action := labels[x.Event]; {
		case action == "":
			bad("expect[%d]: event %q is not the label of an event", i, x.Event)
		case served && action != "pull":
			bad("expect[%d]: served_by and not_served_by need a pull event; %q is a %s", i, x.Event, action)
		case !served && x.MinPushesAfter <= 0:
			bad("expect[%d]: nothing to check: served_by, not_served_by or min_pushes_after", i)
		}
		if x.Until != "" && (labels[x.Until] == "" || x.MinPushesAfter <= 0) {
			bad("expect[%d]: until %q must be the label of an event, with min_pushes_after", i, x.Until)
		}
		for _, n := range append(slices.Clone(x.ServedBy), x.NotServedBy...) {
			if names[n].Name == "" {
				bad("expect[%d]: node %q not declared", i, n)
			}
		}
	}
	return errors.Join(errs...)
}
