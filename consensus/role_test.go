package consensus

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/raft"
)

// TestRoleAndSuffrageStrings: the typed values print and encode as the
// strings raft prints, which the status document has always carried.
func TestRoleAndSuffrageStrings(t *testing.T) {
	t.Parallel()
	roles := []struct {
		raft raft.RaftState
		want Role
	}{{raft.Leader, Leader}, {raft.Follower, Follower}, {raft.Candidate, Candidate}, {raft.Shutdown, Shutdown}}
	for _, tc := range roles {
		if got := roleOf(tc.raft); got != tc.want || got.String() != tc.raft.String() {
			t.Errorf("roleOf(%v) = %q, want %q", tc.raft, got, tc.want)
		}
	}
	suffrages := []struct {
		raft raft.ServerSuffrage
		want Suffrage
	}{{raft.Voter, Voter}, {raft.Nonvoter, Nonvoter}, {raft.Staging, Staging}}
	for _, tc := range suffrages {
		if got := suffrageOf(tc.raft); got != tc.want || got.String() != tc.raft.String() {
			t.Errorf("suffrageOf(%v) = %q, want %q", tc.raft, got, tc.want)
		}
	}
	b, err := json.Marshal(Status{State: Leader, Members: []Member{{ID: "a", Address: "b", Suffrage: Nonvoter}}})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"state":"Leader","leader_id":"","leader_address":"","term":0,"commit_index":0,"applied_index":0,"last_index":0,"members":[{"id":"a","address":"b","suffrage":"Nonvoter"}]}`
	if string(b) != want {
		t.Errorf("status JSON\n got %s\nwant %s", b, want)
	}
}
