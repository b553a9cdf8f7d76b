package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// NodeStatus is the part of /_meshreg/v1/status the harness reads.
type NodeStatus struct {
	NodeID      string `json:"node_id"`
	RaftAddress string `json:"raft_address"`
	// DHTPeers is the size of the node's DHT routing table.
	DHTPeers int `json:"dht_peers"`
	// Removed is true once the node was removed from the cluster.
	Removed bool `json:"removed"`
	// Role is "leader", "voter", "non-voter", "follower" (it follows the
	// metadata without being a Raft member), "revoked" (an operator
	// revoked it as a follower) or "".
	Role string `json:"role"`
	// Revoked says why the node was revoked ("" if it was not).
	Revoked string `json:"revoked"`
	// Follower is a follower's tail ("" fields on a member).
	Follower struct {
		Source      string `json:"source"`
		Applied     uint64 `json:"applied"`
		LeaderID    string `json:"leader_id"`
		Snapshots   uint64 `json:"snapshots"`
		Reconnects  uint64 `json:"reconnects"`
		LeaderIndex uint64 `json:"leader_index"`
		Lag         uint64 `json:"lag"`
	} `json:"follower"`
	Zone string `json:"zone"`
	Raft struct {
		State        string `json:"state"`
		LeaderID     string `json:"leader_id"`
		Term         uint64 `json:"term"`
		CommitIndex  uint64 `json:"commit_index"`
		AppliedIndex uint64 `json:"applied_index"`
		Members      []struct {
			ID       string `json:"id"`
			Address  string `json:"address"`
			Suffrage string `json:"suffrage"`
		} `json:"members"`
	} `json:"raft"`
	Blobs struct {
		Count           int64 `json:"count"`
		Bytes           int64 `json:"bytes"`
		Fetching        int   `json:"fetching"`
		UnderReplicated int64 `json:"under_replicated"`
	} `json:"blobs"`
	Peers []struct {
		ID             string  `json:"id"`
		Zone           string  `json:"zone"`
		Region         string  `json:"region"`
		RTTMs          float64 `json:"rtt_ms"`
		PenalisedUntil *string `json:"penalised_until"`
	} `json:"peers"`
}

// KnowsZone reports whether the node has learned peer id's zone.
func (s NodeStatus) KnowsZone(id, zone string) bool {
	for _, p := range s.Peers {
		if p.ID == id && p.Zone == zone {
			return true
		}
	}
	return false
}

// Penalised reports whether the node currently penalises peer id.
func (s NodeStatus) Penalised(id string) bool {
	for _, p := range s.Peers {
		if p.ID == id && p.PenalisedUntil != nil {
			return true
		}
	}
	return false
}

// Voters counts the voters in the node's view of the configuration.
func (s NodeStatus) Voters() int {
	v := 0
	for _, m := range s.Raft.Members {
		if m.Suffrage == "Voter" {
			v++
		}
	}
	return v
}

// Nonvoters counts the non-voters in the node's view of the configuration.
func (s NodeStatus) Nonvoters() int {
	return len(s.Raft.Members) - s.Voters()
}

// Status reads the node's status document.
func (n *Node) Status(ctx context.Context) (NodeStatus, error) {
	var st NodeStatus
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/_meshreg/v1/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := n.HTTPClient().Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// StartCluster starts size nodes: the first bootstraps, the others join it
// through its API URL, admitted with a join token from the first (unless
// opts.Args has --cluster-key). Unless opts.Args says otherwise, the nodes
// promote non-voters after HarnessStabilization. It returns once every
// node agrees on one leader and the configuration has every node, with
// ExpectedVoters(size, 3) voters.
func StartCluster(t testing.TB, size int, opts Options) []*Node {
	t.Helper()
	if !hasFlag(opts.Args, "--stabilization-time") {
		opts.Args = append(append([]string{}, opts.Args...), "--stabilization-time", HarnessStabilization.String())
	}
	first := StartNode(t, opts)
	nodes := []*Node{first}
	join := []string{"--join", first.URL()}
	if size > 1 && !hasFlag(opts.Args, "--cluster-key") {
		join = append(join, "--join-token", JoinToken(t, first, time.Hour))
	}
	for i := 1; i < size; i++ {
		o := opts
		o.Args = append(append([]string{}, opts.Args...), join...)
		nodes = append(nodes, StartNode(t, o))
	}
	WaitConverged(t, nodes, size, ExpectedVoters(size, 3), 60*time.Second)
	return nodes
}

// WaitConverged waits until every node in nodes names the same leader and
// sees members servers of which voters vote, failing the test after timeout.
func WaitConverged(t testing.TB, nodes []*Node, members, voters int, timeout time.Duration) {
	t.Helper()
	var last string
	ok := Eventually(timeout, func() bool {
		leader := ""
		for _, n := range nodes {
			st, err := n.Status(context.Background())
			if err != nil {
				last = err.Error()
				return false
			}
			if st.Raft.LeaderID == "" || (leader != "" && st.Raft.LeaderID != leader) || len(st.Raft.Members) != members || st.Voters() != voters {
				last = fmt.Sprintf("%s: leader %q, %d members, %d voters", n.Host(), st.Raft.LeaderID, len(st.Raft.Members), st.Voters())
				return false
			}
			leader = st.Raft.LeaderID
		}
		return true
	})
	if !ok {
		t.Fatalf("testnet: cluster did not converge to %d members, %d voters and one leader in %v; last: %s", members, voters, timeout, last)
	}
}

// Leader returns the node that leads, and the others, in the view of the
// live nodes given; it fails the test if there is none within timeout.
func Leader(t testing.TB, nodes []*Node, timeout time.Duration) (leader *Node, followers []*Node) {
	t.Helper()
	Eventually(timeout, func() bool {
		leader, followers = nil, nil
		for _, n := range nodes {
			st, err := n.Status(context.Background())
			if err != nil {
				return false
			}
			if st.Raft.State == "Leader" {
				leader = n
			} else {
				followers = append(followers, n)
			}
		}
		return leader != nil
	})
	if leader == nil {
		t.Fatalf("testnet: no leader among %d nodes after %v", len(nodes), timeout)
	}
	return leader, followers
}

// Eventually polls cond every 50 ms until it holds or timeout passes.
func Eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// AssertAgree checks the cluster invariants on repos through the public API
// of every node given, waiting up to timeout for replication: all nodes
// list the same tags, every tag points at the same digest everywhere, and
// no node serves a tag whose manifest it cannot serve by digest.
func AssertAgree(t testing.TB, nodes []*Node, timeout time.Duration, repos ...string) {
	t.Helper()
	var problem string
	ok := Eventually(timeout, func() bool {
		problem = agreement(nodes, repos)
		return problem == ""
	})
	if !ok {
		t.Errorf("testnet: nodes disagree after %v: %s", timeout, problem)
	}
}

// agreement returns the first broken invariant, or "".
func agreement(nodes []*Node, repos []string) string {
	ctx := context.Background()
	for _, repo := range repos {
		var want map[string]string // tag → digest on the first node
		for i, n := range nodes {
			c := NewClient(n.URL())
			status, _, body, err := c.Get(ctx, "/v2/"+repo+"/tags/list", nil)
			if err != nil || status != http.StatusOK {
				return fmt.Sprintf("%s: tags of %s: %d %v", n.Host(), repo, status, err)
			}
			var list struct{ Tags []string }
			if err := json.Unmarshal(body, &list); err != nil {
				return fmt.Sprintf("%s: tags of %s: %v", n.Host(), repo, err)
			}
			got := map[string]string{}
			for _, tag := range list.Tags {
				_, _, d, err := c.GetManifest(ctx, repo, tag)
				if err != nil {
					return fmt.Sprintf("%s: %s:%s is listed but not served: %v", n.Host(), repo, tag, err)
				}
				if _, _, _, err := c.GetManifest(ctx, repo, d); err != nil {
					return fmt.Sprintf("%s: %s:%s points at %s, which it does not serve: %v", n.Host(), repo, tag, d, err)
				}
				got[tag] = d
			}
			if i == 0 {
				want = got
				continue
			}
			if len(got) != len(want) {
				return fmt.Sprintf("%s lists %d tags in %s, %s lists %d", n.Host(), len(got), repo, nodes[0].Host(), len(want))
			}
			for tag, d := range want {
				if got[tag] != d {
					return fmt.Sprintf("%s:%s is %q on %s but %q on %s", repo, tag, got[tag], n.Host(), d, nodes[0].Host())
				}
			}
		}
	}
	return ""
}
