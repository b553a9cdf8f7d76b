package consensus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestRecoverLostQuorum: a three-voter cluster loses two voters for good.
// The survivor alone has no quorum (it never leads, even after a restart);
// after Recover it leads a cluster of itself, holds every acknowledged
// write (from the snapshot and from the log after it) and takes new ones.
func TestRecoverLostQuorum(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.SnapshotThreshold = 4
		cfg.TrailingLogs = 2
		cfg.SnapshotInterval = 20 * time.Millisecond
	})
	l := c.leader()
	for i := range 12 {
		mustPut(t, l, manifest("app", fmt.Sprint(i), ""), fmt.Sprintf("v%d", i))
	}
	c.converge()
	survivor := c.followers()[0].cfg.NodeID
	for _, id := range c.order {
		c.kill(id)
	}

	// Without recovery the survivor cannot elect itself.
	s := c.start(survivor, nil)
	time.Sleep(2 * time.Second)
	if st := s.raft.State(); st == raft.Leader {
		t.Fatalf("%s leads alone before recovery: the test is wrong", survivor)
	}
	// A running node cannot be recovered.
	if _, err := Recover(Config{Dir: c.dirs[survivor], NodeID: survivor}, nil); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Errorf("Recover of a running node: %v, want an error saying to stop it", err)
	}
	c.kill(survivor)

	if _, err := Recover(Config{Dir: c.dirs[survivor], NodeID: survivor}, []string{"nobody"}); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("Recover keeping an unknown member: %v, want an error naming it", err)
	}
	if _, err := Recover(Config{Dir: c.dirs[survivor], NodeID: "stranger"}, nil); err == nil || !strings.Contains(err.Error(), "not in its last Raft configuration") {
		t.Errorf("Recover as a node not in the configuration: %v", err)
	}
	if _, err := Recover(Config{Dir: t.TempDir(), NodeID: survivor}, nil); err == nil || !strings.Contains(err.Error(), "no Raft state") {
		t.Errorf("Recover of an empty dir: %v", err)
	}
	servers, err := Recover(Config{Dir: c.dirs[survivor], NodeID: survivor, Logger: testLogger(t)}, nil)
	if err != nil {
		t.Fatalf("Recover: %v", err)
	}
	if len(servers) != 1 || servers[0].ID != survivor {
		t.Fatalf("recovered configuration %v, want %s alone", servers, survivor)
	}

	s = c.start(survivor, nil)
	c.eventually(10*time.Second, survivor+" leads after recovery", func() bool { return s.raft.State() == raft.Leader })
	for i := range 12 {
		d, err := s.ResolveTag("app", fmt.Sprintf("v%d", i))
		if err != nil || d != manifest("app", fmt.Sprint(i), "").Digest {
			t.Errorf("tag v%d after recovery: %s, %v", i, d, err)
		}
	}
	mustPut(t, s, manifest("app", "after", ""), "after")
	members, err := s.Members()
	if err != nil || len(members) != 1 || members[0].Suffrage != "Voter" {
		t.Errorf("members after recovery: %v, %v", members, err)
	}
}
