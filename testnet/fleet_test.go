package testnet_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/testnet"
)

// TestClusterNodesListsFollowers: with one non-voter seat past three
// voters, six nodes are four members and two followers of the metadata;
// `meshreg cluster nodes`, asked of a follower, lists all six with their
// role, version, zone and the member each follower tails (as the
// followers' own status says); the members' status counts the followers
// they serve; and a gated setting write (the policy) passes the upgrade
// gate, which now asks for the followers too.
func TestClusterNodesListsFollowers(t *testing.T) {
	testnet.RequireProcess(t)
	zones := []string{"z0", "z1", "z2", "z3", "z4", "z5"}
	nodes := startBounded(t, len(zones), []string{"--voters", "3", "--max-raft-members", "1"}, zones)
	sts := waitRoles(t, nodes, roleCounts{3, 1, 2}, 90*time.Second)
	followers := withRole(sts, nodes, "follower")
	cli := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: t.TempDir()}

	type row struct{ role, version, place, source string }
	var out, last string
	ok := testnet.Eventually(30*time.Second, func() bool {
		out = string(cli.Run("cluster", "nodes", "--node", followers[0].URL()))
		rows := map[string]row{}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) == 7 && f[0] != "PEER" {
				rows[f[0]] = row{f[1], f[2], f[3], f[6]}
			}
		}
		if len(rows) != len(nodes) || !strings.Contains(out, "6 nodes: 4 members, 2 followers") {
			last = fmt.Sprintf("%d rows", len(rows))
			return false
		}
		for _, n := range nodes {
			st, err := n.Status(t.Context())
			if err != nil {
				last = err.Error()
				return false
			}
			r, want := rows[st.NodeID], row{role: st.Role, place: "-/" + st.Zone, source: "-"}
			if st.Role == "follower" {
				want.source = st.Follower.Source
			}
			if r.role != want.role || r.place != want.place || r.source != want.source || r.version == "?" {
				last = fmt.Sprintf("%s: listed %+v, its status says %+v", n.Host(), r, want)
				return false
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("cluster nodes does not list the six nodes as their status says; last: %s\n%s", last, out)
	}
	t.Logf("meshreg cluster nodes:\n%s", out)

	// The JSON document, from a member: nobody unreachable.
	resp, err := http.Get(nodes[0].URL() + "/_meshreg/v1/nodes")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var fleet struct {
		Nodes       []struct{ ID, Role, Agent string } `json:"nodes"`
		Unreachable map[string]string                  `json:"unreachable"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &fleet) != nil || len(fleet.Nodes) != 6 || len(fleet.Unreachable) != 0 {
		t.Fatalf("GET /_meshreg/v1/nodes: %d %s", resp.StatusCode, body)
	}
	for _, n := range fleet.Nodes {
		if !strings.HasPrefix(n.Agent, "meshreg/") || !strings.Contains(n.Agent, " ops/") {
			t.Errorf("node %s (%s) has agent %q, want meshreg's with its ops", n.ID, n.Role, n.Agent)
		}
	}
	served := 0
	for _, n := range nodes {
		var st struct {
			FollowersServed int `json:"followers_served"`
		}
		_, _, b, err := testnet.NewClient(n.URL()).Get(t.Context(), "/_meshreg/v1/status", nil)
		if err != nil || json.Unmarshal(b, &st) != nil {
			t.Fatalf("status of %s: %v", n.Host(), err)
		}
		served += st.FollowersServed
	}
	if served != 2 {
		t.Errorf("the members serve %d followers in all, want 2", served)
	}

	// Every node runs this release: the gate lets a policy through a follower.
	resp, err = http.DefaultClient.Do(mustRequest(t, http.MethodPut, followers[1].URL()+"/_meshreg/v1/policy",
		"rules:\n  - repositories: [e2e/fleet-*]\n    quota: 1GiB\n"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Errorf("PUT policy through a follower with every node of this release: %d %s", resp.StatusCode, body)
	}
}
