package scenario

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/containers"
)

// Node states, as the runner made them. Only "running" nodes take load;
// "paused" ones are thawed at heal; the rest are down on purpose.
const (
	stateNotStarted = "not-started"
	stateRunning    = "running"
	statePaused     = "paused"
	stateKilled     = "killed"
	stateStopped    = "stopped"
	stateRemoved    = "removed"
)

// node is one declared node and what the runner did to it.
type node struct {
	spec  NodeSpec
	c     *containers.Container // nil until started
	state string
	logs  string // captured before a remove, or of the containers an upgrade replaced
	image string // the image its container runs
	args  []string
}

// cluster is the runner's view of the nodes. Its methods may be called by
// the workload, the event loop and the poller at once.
type cluster struct {
	mu      sync.Mutex
	nodes   []*node
	byName  map[string]*node
	cutOff  map[string]bool // names of the nodes cut off by the current partition
	shaping []containers.Shaping
	http    *http.Client
}

func newCluster(specs []NodeSpec) *cluster {
	cl := &cluster{byName: map[string]*node{}, cutOff: map[string]bool{},
		http: &http.Client{Timeout: 5 * time.Second}}
	for _, s := range specs {
		n := &node{spec: s, state: stateNotStarted}
		cl.nodes = append(cl.nodes, n)
		cl.byName[s.Name] = n
	}
	return cl
}

// running returns the nodes currently running, in declaration order.
func (cl *cluster) running() []*node {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []*node
	for _, n := range cl.nodes {
		if n.state == stateRunning {
			out = append(out, n)
		}
	}
	return out
}

// started returns every node that has a container (any state but
// not-started and removed).
func (cl *cluster) started() []*node {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	var out []*node
	for _, n := range cl.nodes {
		if n.c != nil && n.state != stateRemoved {
			out = append(out, n)
		}
	}
	return out
}

func (cl *cluster) setState(n *node, s string) { cl.mu.Lock(); n.state = s; cl.mu.Unlock() }

func (cl *cluster) stateOf(n *node) string { cl.mu.Lock(); defer cl.mu.Unlock(); return n.state }

// side says where n stands: "cut-off" by the current partition, the
// "rest" during one, or "whole" when there is none.
func (cl *cluster) side(n *node) string {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	switch {
	case len(cl.cutOff) == 0:
		return "whole"
	case cl.cutOff[n.spec.Name]:
		return "cut-off"
	}
	return "rest"
}

// randomRunning picks a running node other than the excluded ones, or nil.
func (cl *cluster) randomRunning(exclude ...*node) *node {
	var pick []*node
	for _, n := range cl.running() {
		if !slices.Contains(exclude, n) {
			pick = append(pick, n)
		}
	}
	if len(pick) == 0 {
		return nil
	}
	return pick[rand.IntN(len(pick))]
}

// status reads a node's status document.
func (cl *cluster) status(ctx context.Context, n *node) (testnet.NodeStatus, error) {
	var st testnet.NodeStatus
	c := testnet.NewClient(n.c.URL())
	c.HTTP = cl.http
	code, _, body, err := c.Get(ctx, "/_meshreg/v1/status", nil)
	if err != nil {
		return st, err
	}
	if code != http.StatusOK {
		return st, fmt.Errorf("status of %s: HTTP %d", n.spec.Name, code)
	}
	return st, jsonUnmarshal(body, &st)
}

// resolve turns an event target into a node: a name; "leader" or
// "follower" (waiting up to 30 s for a leader); "any" running node;
// "uncut", a running node outside the set the current partition cut off;
// "down", the first node killed or stopped by an earlier event (to start
// again a leader that was killed by role); or "paused", the first paused
// node.
func (cl *cluster) resolve(ctx context.Context, target string) (*node, error) {
	switch target {
	case "any":
		if n := cl.randomRunning(); n != nil {
			return n, nil
		}
		return nil, errors.New("no node is running")
	case "uncut":
		cl.mu.Lock()
		var cut []*node
		for _, n := range cl.nodes {
			if cl.cutOff[n.spec.Name] {
				cut = append(cut, n)
			}
		}
		cl.mu.Unlock()
		if n := cl.randomRunning(cut...); n != nil {
			return n, nil
		}
		return nil, errors.New("no running node outside the partition's cut-off set")
	case "down", "paused":
		cl.mu.Lock()
		defer cl.mu.Unlock()
		for _, n := range cl.nodes {
			if (target == "down" && (n.state == stateKilled || n.state == stateStopped)) || (target == "paused" && n.state == statePaused) {
				return n, nil
			}
		}
		return nil, fmt.Errorf("no node is %s", target)
	case "leader", "follower":
		var found *node
		var last string
		ok := poll(ctx, 30*time.Second, 250*time.Millisecond, func() bool {
			for _, n := range cl.running() {
				st, err := cl.status(ctx, n)
				if err != nil {
					last = err.Error()
					continue
				}
				if (st.Raft.State == "Leader") == (target == "leader") && st.Raft.LeaderID != "" {
					found = n
					return true
				}
				last = fmt.Sprintf("%s is %s, leader %q", n.spec.Name, st.Raft.State, st.Raft.LeaderID)
			}
			return false
		})
		if !ok {
			return nil, fmt.Errorf("no running node is the %s after 30s (last: %s)", target, last)
		}
		return found, nil
	}
	n := cl.byName[target]
	if n == nil {
		return nil, fmt.Errorf("no node named %q", target)
	}
	return n, nil
}

// waitReady waits until the node's /readyz answers 200 (it knows a leader).
func (cl *cluster) waitReady(ctx context.Context, n *node, timeout time.Duration) error {
	var last string
	ok := poll(ctx, timeout, 200*time.Millisecond, func() bool {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.c.URL()+"/readyz", nil)
		resp, err := cl.http.Do(req)
		if err != nil {
			last = err.Error()
			return false
		}
		resp.Body.Close()
		last = resp.Status
		return resp.StatusCode == http.StatusOK
	})
	if !ok {
		return fmt.Errorf("%s not ready after %v (last: %s); see its logs", n.spec.Name, timeout, last)
	}
	return nil
}

// agreement returns "" when every running node names the same leader and
// sees the same number of members, members of them; else what differs.
func (cl *cluster) agreement(ctx context.Context, members int) string {
	leader := ""
	for _, n := range cl.running() {
		st, err := cl.status(ctx, n)
		if err != nil {
			return err.Error()
		}
		if st.Raft.LeaderID == "" || (leader != "" && st.Raft.LeaderID != leader) {
			return fmt.Sprintf("%s: leader %q, others %q", n.spec.Name, st.Raft.LeaderID, leader)
		}
		if members > 0 && len(st.Raft.Members) != members {
			return fmt.Sprintf("%s: %d members, want %d", n.spec.Name, len(st.Raft.Members), members)
		}
		leader = st.Raft.LeaderID
	}
	if leader == "" {
		return "no node running"
	}
	return ""
}

// poll calls cond every interval until it holds, timeout passes or ctx
// ends: the one bounded wait loop of the package.
func poll(ctx context.Context, timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(interval):
		}
	}
}
