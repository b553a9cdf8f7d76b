package consensus

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestForwardedWriteDoesNotWaitForCommitTimeout: a write through a follower
// returns, and shows on the other follower, long before raft's next idle
// AppendEntries (CommitTimeout), because the leader tells the followers of
// its commit at once. That is what lets CommitTimeout be long, and the
// idle leader cheap, without slowing writes through followers.
func TestForwardedWriteDoesNotWaitForCommitTimeout(t *testing.T) {
	t.Parallel()
	const idleAppend = 3 * time.Second // CommitTimeout here: the idle AppendEntries come every 3–6 s
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.tune = func(rc *raft.Config) { fastRaft(rc); rc.CommitTimeout = idleAppend }
	})
	fs := c.followers()
	for i := range 5 {
		m := manifest("lib/app", fmt.Sprintf("w%d", i), "")
		tag := fmt.Sprintf("v%d", i)
		start := time.Now()
		mustPut(t, fs[0], m, tag)
		if took := time.Since(start); took > idleAppend/3 {
			t.Fatalf("write %d through a follower took %v: it waited for the idle AppendEntries (every %v)", i, took, idleAppend)
		}
		for {
			if d, err := fs[1].ResolveTag("lib/app", tag); err == nil && d == m.Digest {
				break
			}
			if took := time.Since(start); took > idleAppend/3 {
				t.Fatalf("write %d not on the other follower %v after the write began", i, took)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

// TestLeaderWriteDoesNotWaitForCommitTimeout: a write taken by the leader
// itself shows on the other members long before raft's next idle
// AppendEntries, since the leader tells them of its own commits too. That
// is what lets CommitTimeout be 250 ms (store.go) without the other nodes'
// view of a tag pushed to the leader lagging by as much.
func TestLeaderWriteDoesNotWaitForCommitTimeout(t *testing.T) {
	t.Parallel()
	const idleAppend = 3 * time.Second // CommitTimeout here: the idle AppendEntries come every 3–6 s
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.tune = func(rc *raft.Config) { fastRaft(rc); rc.CommitTimeout = idleAppend }
	})
	l, fs := c.leader(), c.followers()
	for i := range 5 {
		m := manifest("lib/app", fmt.Sprintf("l%d", i), "")
		tag := fmt.Sprintf("l%d", i)
		start := time.Now()
		mustPut(t, l, m, tag)
		for _, f := range fs {
			for {
				if d, err := f.ResolveTag("lib/app", tag); err == nil && d == m.Digest {
					break
				}
				if took := time.Since(start); took > idleAppend/3 {
					t.Fatalf("leader's write %d not on a follower %v after the write began: it waited for the idle AppendEntries", i, took)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
}
