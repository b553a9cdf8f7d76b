package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/nodefake"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// recordedChanges passes the membership loop's calls on to a fake store
// and records the changes it asked for.
type recordedChanges struct {
	clusterChanges
	mu       sync.Mutex
	removed  []string
	promoted []string
}

func (r *recordedChanges) RemoveServer(ctx context.Context, id string) error {
	r.mu.Lock()
	r.removed = append(r.removed, id)
	r.mu.Unlock()
	return r.clusterChanges.RemoveServer(ctx, id)
}

func (r *recordedChanges) Promote(ctx context.Context, id string) error {
	r.mu.Lock()
	r.promoted = append(r.promoted, id)
	r.mu.Unlock()
	return r.clusterChanges.Promote(ctx, id)
}

func (r *recordedChanges) changes() (removed, promoted []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.removed), slices.Clone(r.promoted)
}

// upkeepFixture is a fake cluster led by "a" (a voter) with the given
// other voters and non-voters, and the membership loop of the member self
// over it, on a clock the test moves.
type upkeepFixture struct {
	cluster *nodefake.Cluster
	metas   map[string]*nodefake.Meta
	rec     *recordedChanges
	m       *membership
	clock   time.Time
	down    map[string]bool // members this node has no connection to
	sick    map[string]bool // non-voters whose health check fails
	noted   int             // steps that recorded contacts
	checked map[string]int  // health checks per member
}

func newUpkeepFixture(t *testing.T, self string, voters, nonvoters []string, rules upkeepRules) *upkeepFixture {
	t.Helper()
	f := &upkeepFixture{cluster: nodefake.NewCluster(), metas: map[string]*nodefake.Meta{},
		clock: time.Unix(1_000_000, 0), down: map[string]bool{}, sick: map[string]bool{}, checked: map[string]int{}}
	for _, id := range append([]string{"a"}, voters...) {
		f.metas[id] = f.cluster.Join(id, "/addr/"+id)
	}
	for _, id := range nonvoters {
		if err := f.metas["a"].AddNonvoter(t.Context(), id, "/addr/"+id); err != nil {
			t.Fatal(err)
		}
	}
	f.rec = &recordedChanges{clusterChanges: f.metas[self]}
	health := func(ctx context.Context, id string) error {
		f.checked[id]++
		if f.sick[id] {
			return errors.New("behind the leader")
		}
		return nil
	}
	f.m = newMembership(f.rec, self, func(id string) bool { return !f.down[id] }, health, func(string) peerLabels { return peerLabels{} }, func() { f.noted++ },
		rules, tlog.Logger(t, slog.LevelDebug))
	f.m.now = func() time.Time { return f.clock }
	return f
}

// step runs one round of the loop on the store's current view.
func (f *upkeepFixture) step(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, _ := f.rec.Watch(ctx)
	f.m.step(t.Context(), st)
}

// suffrages returns every member's suffrage.
func (f *upkeepFixture) suffrages(t *testing.T) map[string]consensus.Suffrage {
	t.Helper()
	members, err := f.metas["a"].Members()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]consensus.Suffrage{}
	for _, m := range members {
		out[m.ID] = m.Suffrage
	}
	return out
}

func TestMembershipRemovesMemberDeadPastTimeout(t *testing.T) {
	t.Parallel()
	f := newUpkeepFixture(t, "a", []string{"b", "c"}, nil, upkeepRules{DeadServerTimeout: time.Minute, Voters: 3})
	f.down["b"] = true
	f.step(t) // b's unreachable stretch starts
	f.clock = f.clock.Add(59 * time.Second)
	f.step(t)
	if removed, _ := f.rec.changes(); len(removed) != 0 {
		t.Fatalf("removed %v before --dead-server-timeout passed", removed)
	}
	f.clock = f.clock.Add(time.Second)
	f.step(t)
	if removed, _ := f.rec.changes(); !slices.Equal(removed, []string{"b"}) {
		t.Fatalf("removed %v, want [b] (unreachable for the timeout)", removed)
	}
	if got := f.suffrages(t); len(got) != 2 || got["c"] != consensus.Voter {
		t.Errorf("members after the removal = %v, want a and c", got)
	}
}

func TestMembershipContactRestartsTheDeadTimeout(t *testing.T) {
	t.Parallel()
	f := newUpkeepFixture(t, "a", []string{"b", "c"}, nil, upkeepRules{DeadServerTimeout: time.Minute, Voters: 3})
	f.down["b"] = true
	f.step(t)
	f.clock = f.clock.Add(50 * time.Second)
	f.down["b"] = false // back for a moment
	f.step(t)
	f.down["b"] = true
	f.clock = f.clock.Add(50 * time.Second)
	f.step(t)
	f.clock = f.clock.Add(50 * time.Second)
	f.step(t)
	if removed, _ := f.rec.changes(); len(removed) != 0 {
		t.Errorf("removed %v: a contact should restart the unreachable stretch", removed)
	}
}

func TestMembershipPromotesOnlyToOddVoterCounts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		voters    []string // besides the leader a
		nonvoters []string
		sick      []string
		target    int
		want      []string
	}{
		{"1 voter, 1 healthy non-voter: 1 -> 2 is even", nil, []string{"b"}, nil, 3, nil},
		{"1 voter, 2 healthy non-voters: both, 1 -> 3", nil, []string{"b", "c"}, nil, 3, []string{"b", "c"}},
		{"1 voter, 2 non-voters, one unhealthy", nil, []string{"b", "c"}, []string{"c"}, 3, nil},
		{"2 voters, 1 healthy non-voter: 2 -> 3", []string{"b"}, []string{"c"}, nil, 3, []string{"c"}},
		{"3 voters at target", []string{"b", "c"}, []string{"d", "e"}, nil, 3, nil},
		{"3 voters, target 5, 1 healthy: 3 -> 4 is even", []string{"b", "c"}, []string{"d"}, nil, 5, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const stab = 10 * time.Second
			f := newUpkeepFixture(t, "a", tc.voters, tc.nonvoters, upkeepRules{DeadServerTimeout: time.Minute, StabilizationTime: stab, Voters: tc.target})
			for _, id := range tc.sick {
				f.sick[id] = true
			}
			f.step(t) // healthy stretches start
			f.clock = f.clock.Add(stab - time.Second)
			f.step(t)
			if _, promoted := f.rec.changes(); len(promoted) != 0 {
				t.Fatalf("promoted %v before the stabilization time passed", promoted)
			}
			f.clock = f.clock.Add(time.Second)
			f.step(t)
			_, promoted := f.rec.changes()
			slices.Sort(promoted)
			if !slices.Equal(promoted, tc.want) {
				t.Fatalf("promoted %v, want %v", promoted, tc.want)
			}
			voters := 0
			for _, s := range f.suffrages(t) {
				if s == consensus.Voter {
					voters++
				}
			}
			if voters%2 == 0 {
				t.Errorf("%d voters after the promotions: an even count", voters)
			}
		})
	}
}

// TestMembershipSamplesHealthChecksAtTarget: with the voters at their
// target, the leader health checks a few non-voters per round, in turn,
// not every one of them every second (an all-pairs cost at a few hundred
// nodes); once a voter is lost it checks them all again and promotes one
// that was healthy for the stabilization time, never a sick one.
func TestMembershipSamplesHealthChecksAtTarget(t *testing.T) {
	t.Parallel()
	const stab = 10 * time.Second
	var nonvoters []string
	for i := range 20 {
		nonvoters = append(nonvoters, fmt.Sprintf("n%02d", i))
	}
	f := newUpkeepFixture(t, "a", []string{"b", "c"}, nonvoters, upkeepRules{DeadServerTimeout: time.Hour, StabilizationTime: stab, Voters: 3})
	rounds := (len(nonvoters) + healthSample - 1) / healthSample
	for range rounds {
		before := total(f.checked)
		f.step(t)
		if got := total(f.checked) - before; got > healthSample {
			t.Fatalf("one round at the voter target made %d health checks, want at most %d", got, healthSample)
		}
		f.clock = f.clock.Add(time.Second)
	}
	for _, id := range nonvoters {
		if f.checked[id] == 0 {
			t.Errorf("non-voter %s never checked in %d rounds", id, rounds)
		}
	}
	if _, promoted := f.rec.changes(); len(promoted) != 0 {
		t.Fatalf("promoted %v with the voters at their target", promoted)
	}

	// Voter c is lost: every non-voter is checked at the next round, and a
	// healthy one that was seen healthy long enough is promoted at once.
	f.clock = f.clock.Add(stab)
	for _, id := range nonvoters[:len(nonvoters)-1] {
		f.sick[id] = true
	}
	if err := f.metas["a"].RemoveServer(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	before := maps.Clone(f.checked)
	f.step(t)
	for _, id := range nonvoters {
		if f.checked[id] == before[id] {
			t.Errorf("non-voter %s not checked in the round after a voter was lost", id)
		}
	}
	_, promoted := f.rec.changes()
	if want := []string{nonvoters[len(nonvoters)-1]}; !slices.Equal(promoted, want) {
		t.Fatalf("promoted %v after voter c was lost, want %v (the only healthy non-voter)", promoted, want)
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func TestMembershipDoesNothingWhenNotLeader(t *testing.T) {
	t.Parallel()
	f := newUpkeepFixture(t, "b", []string{"b", "c"}, []string{"d", "e"}, upkeepRules{DeadServerTimeout: time.Minute, Voters: 5})
	f.down["c"] = true
	for range 3 {
		f.step(t)
		f.clock = f.clock.Add(time.Hour)
	}
	if removed, promoted := f.rec.changes(); len(removed) != 0 || len(promoted) != 0 {
		t.Errorf("a follower removed %v and promoted %v; only the leader changes the membership", removed, promoted)
	}
	if f.noted != 3 {
		t.Errorf("contacts recorded in %d of 3 steps; every node records them", f.noted)
	}
	// Leading, it starts the dead member's stretch afresh: what it saw as
	// a follower does not count.
	f.cluster.Lead("b")
	f.step(t)
	if removed, _ := f.rec.changes(); len(removed) != 0 {
		t.Errorf("removed %v at once on becoming leader", removed)
	}
}

func TestMembershipRunFollowsMembershipEvents(t *testing.T) {
	t.Parallel()
	f := newUpkeepFixture(t, "a", nil, nil, upkeepRules{DeadServerTimeout: time.Hour, Voters: 3})
	f.m.now = time.Now // Run's goroutine reads the clock
	// The timer never fires in this test: only the join events can start
	// the promotion.
	f.m.every = time.Hour
	stop := runInBackground(t, f.m)
	leader := f.metas["a"]
	for _, id := range []string{"b", "c"} {
		if err := leader.AddNonvoter(t.Context(), id, "/addr/"+id); err != nil {
			t.Fatal(err)
		}
	}
	// No stabilization time: the second join's event promotes both.
	eventually(t, "both non-voters promoted", func() bool {
		s := f.suffrages(t)
		return s["b"] == consensus.Voter && s["c"] == consensus.Voter
	})
	if err := stop(); err != nil {
		t.Errorf("Run = %v, want nil once its context ends", err)
	}
}
