package node

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshreg/meshreg/node/nodefake"
)

// removalFixture is a removal watch over member b of a fake cluster led
// by a, with checks counted and every check answering removed.
type removalFixture struct {
	cluster       *nodefake.Cluster
	checks, joins atomic.Int32
	removed       atomic.Bool // what the next check answers
	gone          atomic.Bool // b knows a configuration without itself
	w             *removalWatch
}

func newRemovalFixture(t *testing.T) *removalFixture {
	f := &removalFixture{cluster: nodefake.NewCluster()}
	f.cluster.Join("a", "/addr/a")
	b := f.cluster.Join("b", "/addr/b")
	check := func(ctx context.Context) (bool, bool) {
		f.checks.Add(1)
		return f.removed.Load(), true
	}
	f.w = newRemovalWatch(b, func() bool { return !f.gone.Load() }, check, func(ctx context.Context) { f.joins.Add(1) })
	f.w.after, f.w.every = 20*time.Millisecond, 20*time.Millisecond
	return f
}

func TestRemovalWatchQuietWhileThereIsALeader(t *testing.T) {
	t.Parallel()
	f := newRemovalFixture(t)
	stop := runInBackground(t, f.w)
	time.Sleep(100 * time.Millisecond) // five times the leaderless delay
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if n := f.checks.Load(); n != 0 {
		t.Errorf("checked %d times with a leader known; a follower has nothing to ask", n)
	}
}

func TestRemovalWatchAsksWhenLeaderlessAndRejoinsWhenRemoved(t *testing.T) {
	t.Parallel()
	f := newRemovalFixture(t)
	stop := runInBackground(t, f.w)
	f.cluster.Lead("") // the leader is gone (a partition)
	eventually(t, "a check after the leaderless delay", func() bool { return f.checks.Load() >= 2 })
	if n := f.joins.Load(); n != 0 {
		t.Fatalf("rejoined %d times while still a member", n)
	}
	f.removed.Store(true)
	eventually(t, "a rejoin once a check says removed", func() bool { return f.joins.Load() >= 1 })
	if err := stop(); err != nil {
		t.Errorf("Run = %v, want nil once its context ends", err)
	}
}

// TestRemovalWatchRejoinsWhenToldOfItsRemovalAsACutHeals: a member cut off
// past the dead-server timeout hears, as the cut heals, the leader's last
// AppendEntries (which names the leader) and then the configuration
// without itself. It asks at once and joins again, as it would have had
// it heard nothing.
func TestRemovalWatchRejoinsWhenToldOfItsRemovalAsACutHeals(t *testing.T) {
	t.Parallel()
	f := newRemovalFixture(t)
	f.w.after, f.w.every = time.Hour, time.Hour // any check below is the cut's
	f.removed.Store(true)
	stop := runInBackground(t, f.w)
	f.cluster.Lead("") // cut off
	time.Sleep(20 * time.Millisecond)
	f.cluster.Lead("a") // the cut heals: the leader's last AppendEntries
	f.gone.Store(true)
	f.cluster.Lead("a") // then the configuration without b
	eventually(t, "a rejoin once removed as the cut healed", func() bool { return f.joins.Load() >= 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestRemovalWatchStaysOutWhenRemovedWhileInTouch: a member removed while
// it follows a leader (an operator's `meshreg cluster remove`) does not
// join again by itself.
func TestRemovalWatchStaysOutWhenRemovedWhileInTouch(t *testing.T) {
	t.Parallel()
	f := newRemovalFixture(t)
	f.removed.Store(true)
	stop := runInBackground(t, f.w)
	time.Sleep(20 * time.Millisecond)
	f.gone.Store(true)
	f.cluster.Lead("a")                // the configuration without b
	time.Sleep(100 * time.Millisecond) // five times the leaderless delay
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if c, j := f.checks.Load(), f.joins.Load(); c != 0 || j != 0 {
		t.Errorf("removed while in touch with the leader: %d checks, %d rejoins; want none", c, j)
	}
}

// TestJoinerWithoutTargetsOnlyWatches: a node started without --join (the
// one that bootstrapped) joins nothing but still watches for its removal
// (asking the other members: checkRound), so a leader removed right after
// it handed leadership over learns it was removed.
func TestJoinerWithoutTargetsOnlyWatches(t *testing.T) {
	t.Parallel()
	var joined, watched bool
	j := newJoiner(nil, func(context.Context) { joined = true }, loopFunc(func(context.Context) { watched = true }))
	if err := j.Run(t.Context()); err != nil || joined || !watched {
		t.Errorf("Run = %v (joined %v, watched %v); without --join it joins nothing and watches", err, joined, watched)
	}
	j = newJoiner([]string{"http://a:5000"}, func(context.Context) { joined = true }, loopFunc(func(context.Context) { watched = true }))
	if err := j.Run(t.Context()); err != nil || !joined || !watched {
		t.Errorf("Run = %v (joined %v, watched %v); with --join it joins, then watches", err, joined, watched)
	}
}
