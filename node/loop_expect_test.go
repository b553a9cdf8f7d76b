package node

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// fakeFleet is the --bootstrap-expect exchange as scripted by a test.
type fakeFleet struct {
	mu            sync.Mutex
	member, gone  bool
	seen          map[string]string
	existing      [2]string          // a member of a cluster heard of: id, addr
	servers       []consensus.Server // the bootstrap set, once this node is the one
	hellos        []string
	joinedThrough []string
}

func (f *fakeFleet) isMember() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.member }
func (f *fakeFleet) removed() bool  { f.mu.Lock(); defer f.mu.Unlock(); return f.gone }
func (f *fakeFleet) hello(ctx context.Context, target string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hellos = append(f.hellos, target)
	return nil
}
func (f *fakeFleet) seenPeers() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.seen {
		out[k] = v
	}
	return out
}
func (f *fakeFleet) addSeen(peers map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, v := range peers {
		f.seen[k] = v
	}
}
func (f *fakeFleet) clusterMember() (string, string)  { return f.existing[0], f.existing[1] }
func (f *fakeFleet) bootstrapSet() []consensus.Server { return f.servers }
func (f *fakeFleet) joinThrough(ctx context.Context, targets []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joinedThrough = targets
	f.member = true
}

// expectRun runs an expecter of 3 over fleet until it returns, and says
// which of its restart and watch loops ran and what it bootstrapped with.
func expectRun(t *testing.T, fleet *fakeFleet) (restarted, watched bool, booted []consensus.Server) {
	t.Helper()
	if fleet.seen == nil {
		fleet.seen = map[string]string{}
	}
	var status joinState
	e := newExpecter(3, []string{"http://b:5000", "http://c:5000"}, "self", "/addr/self", fleet, &status,
		func(peer.ID) {}, func(s []consensus.Server) error { booted = s; return nil },
		loopFunc(func(context.Context) { restarted = true }), loopFunc(func(context.Context) { watched = true }),
		tlog.Logger(t, slog.LevelDebug))
	if err := e.Run(t.Context()); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if booted != nil && status.status() != nil {
		t.Errorf("the join status still waits after the bootstrap: %+v", status.status())
	}
	return restarted, watched, booted
}

func TestExpecterRestartedMemberRunsTheJoinLoop(t *testing.T) {
	t.Parallel()
	for _, f := range []*fakeFleet{{member: true}, {gone: true}} {
		restarted, watched, booted := expectRun(t, f)
		if !restarted || watched || booted != nil || len(f.hellos) != 0 {
			t.Errorf("member %v removed %v: restarted %v watched %v booted %v hellos %v; want the join loop only",
				f.member, f.gone, restarted, watched, booted, f.hellos)
		}
	}
}

func TestExpecterJoinsAnExistingCluster(t *testing.T) {
	t.Parallel()
	f := &fakeFleet{existing: [2]string{"m", "/addr/m"}}
	_, watched, booted := expectRun(t, f)
	if booted != nil || !watched {
		t.Errorf("booted %v watched %v; a node that hears of a cluster joins it, then watches", booted, watched)
	}
	if want := []string{"/addr/m", "http://b:5000", "http://c:5000"}; !slices.Equal(f.joinedThrough, want) {
		t.Errorf("joined through %v, want the member first: %v", f.joinedThrough, want)
	}
}

func TestExpecterBootstrapsWhenItIsTheOne(t *testing.T) {
	t.Parallel()
	servers := []consensus.Server{{ID: "self"}, {ID: "x"}, {ID: "y"}}
	f := &fakeFleet{servers: servers}
	_, watched, booted := expectRun(t, f)
	if !slices.Equal(booted, servers) || !watched {
		t.Errorf("booted %v watched %v, want %v then the removal watch", booted, watched, servers)
	}
	if f.seen["self"] != "/addr/self" || !slices.Contains(f.hellos, "http://b:5000") {
		t.Errorf("seen %v hellos %v: it counts itself and says hello to every --join target", f.seen, f.hellos)
	}
}
