package consensus

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestReadIndexCoversAcknowledgedWrites: a tag written on the leader and
// acknowledged, the leader then killed at once (before the followers
// learned the commit): the new leader's ReadIndex covers the write, and a
// follower that applied up to it reads the tag. Elsewhere than on the
// leader, ReadIndex is ErrNotLeader.
func TestReadIndexCoversAcknowledgedWrites(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	for round := range 3 {
		old := c.leader()
		for _, f := range c.followers() {
			if _, err := f.ReadIndex(ctx); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("ReadIndex on follower %s: %v, want ErrNotLeader", f.cfg.NodeID, err)
			}
		}
		tag := fmt.Sprintf("v%d", round)
		m := manifest("lib/app", tag, "")
		mustPut(t, old, m, tag)
		acked := old.AppliedIndex()
		c.kill(old.cfg.NodeID)

		l := c.leader()
		var idx uint64
		c.eventually(5*time.Second, "a ReadIndex from the new leader", func() bool {
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			var err error
			idx, err = l.ReadIndex(rctx)
			return err == nil
		})
		if idx < acked {
			t.Fatalf("round %d: the new leader's read index %d is below the acknowledged write's %d", round, idx, acked)
		}
		for _, s := range c.live() {
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.WaitApplied(wctx, idx)
			cancel()
			if err != nil {
				t.Fatalf("%s: WaitApplied(%d): %v", s.cfg.NodeID, idx, err)
			}
			if d, err := s.ResolveTag("lib/app", tag); err != nil || d != m.Digest {
				t.Errorf("round %d: %s read %s after the read index: %s, %v; want %s", round, s.cfg.NodeID, tag, d, err, m.Digest)
			}
		}
		c.start(old.cfg.NodeID, nil)
	}
}
