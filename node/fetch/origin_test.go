package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ptest "github.com/libp2p/go-libp2p/core/test"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func randomPeers(t *testing.T, n int) []peer.ID {
	out := make([]peer.ID, n)
	for i := range out {
		out[i] = ptest.RandPeerIDFatal(t)
	}
	return out
}

// TestChooseSpreadsAndMovesOnlyTheLeaversShare: rendezvous hashing gives
// each member about its share of the digests, every caller the same
// answer whatever the order of the list, and when a member leaves only
// the digests it had won move; when one joins, only digests move to it.
func TestChooseSpreadsAndMovesOnlyTheLeaversShare(t *testing.T) {
	t.Parallel()
	members := randomPeers(t, 5)
	const digests = 10000
	ds := make([]digest.Digest, digests)
	chosen := make([]peer.ID, digests)
	share := map[peer.ID]int{}
	for i := range ds {
		ds[i] = digest.FromBytes([]byte{byte(i), byte(i >> 8), byte(i >> 16)})
		chosen[i] = Choose(ds[i], members)
		share[chosen[i]]++
	}
	for _, p := range members {
		if got := share[p]; got < digests/5*85/100 || got > digests/5*115/100 {
			t.Errorf("member chosen for %d of %d digests, want about %d", got, digests, digests/5)
		}
	}
	shuffled := slices.Clone(members)
	rand.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	leaver := members[2]
	without := slices.DeleteFunc(slices.Clone(shuffled), func(p peer.ID) bool { return p == leaver })
	joiner := ptest.RandPeerIDFatal(t)
	with := append(slices.Clone(members), joiner)
	moved, toJoiner := 0, 0
	for i, d := range ds {
		if got := Choose(d, shuffled); got != chosen[i] {
			t.Fatalf("digest %d: %s in another order, %s before", i, got, chosen[i])
		}
		after := Choose(d, without)
		if chosen[i] != leaver && after != chosen[i] {
			t.Fatalf("digest %d moved from %s, which stayed, to %s", i, chosen[i], after)
		}
		if after != chosen[i] {
			moved++
		}
		if got := Choose(d, with); got != chosen[i] {
			if got != joiner {
				t.Fatalf("digest %d moved from %s to %s when another member joined", i, chosen[i], got)
			}
			toJoiner++
		}
	}
	if moved != share[leaver] {
		t.Errorf("%d digests moved when a member left, want its share %d", moved, share[leaver])
	}
	if toJoiner < digests/6*85/100 || toJoiner > digests/6*115/100 {
		t.Errorf("%d digests moved to a joiner, want about %d", toJoiner, digests/6)
	}
	if Choose(ds[0], nil) != "" {
		t.Error("chose a member among none")
	}
}

// originCall is one call a test origin received.
type originCall struct {
	repo   string
	offset int64
}

// testOrigin serves blob; the first call's stream breaks after breakAt
// bytes (0: never). It records every call.
type testOrigin struct {
	blob    []byte
	breakAt int64
	// stallAt makes the first call's stream send nothing after that many
	// bytes until its context ends (0: never).
	stallAt int64
	// wrong flips a byte of every stream.
	wrong bool

	mu    sync.Mutex
	calls []originCall
}

func (o *testOrigin) fn(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error) {
	o.mu.Lock()
	first := len(o.calls) == 0
	o.calls = append(o.calls, originCall{repo: repo, offset: offset})
	o.mu.Unlock()
	rest := o.blob[offset:]
	if o.wrong {
		rest = bytes.Clone(rest)
		rest[len(rest)/2] ^= 1
	}
	if first && o.stallAt > 0 {
		return io.NopCloser(io.MultiReader(bytes.NewReader(rest[:o.stallAt]), readerFunc(func([]byte) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		}))), nil
	}
	if first && o.breakAt > 0 {
		return io.NopCloser(io.MultiReader(bytes.NewReader(rest[:o.breakAt]), errReader{errors.New("connection reset by upstream")})), nil
	}
	return io.NopCloser(bytes.NewReader(rest)), nil
}

func (o *testOrigin) Origin(name string) (OriginFunc, bool) {
	if name != "up.example" {
		return nil, false
	}
	return o.fn, true
}

func (o *testOrigin) callList() []originCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.calls)
}

// fakeDelegator answers every delegation with err and records them.
type fakeDelegator struct {
	err error

	mu    sync.Mutex
	asked []peer.ID
	reqs  []OriginRequest
}

func (d *fakeDelegator) Delegate(_ context.Context, to peer.ID, req OriginRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked = append(d.asked, to)
	d.reqs = append(d.reqs, req)
	return d.err
}

// chosenOther returns a peer that Choose prefers over self for d.
func chosenOther(t *testing.T, d digest.Digest, self peer.ID) peer.ID {
	for range 100 {
		p := ptest.RandPeerIDFatal(t)
		if Choose(d, []peer.ID{self, p}) == p {
			return p
		}
	}
	t.Fatal("no peer beats self")
	return ""
}

func counter() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "c"}) }

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// TestOriginSourceDecides: which member fetches from the origin, and what
// this node does when it is not that member.
func TestOriginSourceDecides(t *testing.T) {
	t.Parallel()
	blob := bytes.Repeat([]byte("origin bytes "), 5000)
	d := digest.FromBytes(blob)
	self := ptest.RandPeerIDFatal(t)
	other := chosenOther(t, d, self)
	tests := []struct {
		name string
		// members are what Fetchers returns.
		members []peer.ID
		// delegateErr is the chosen member's answer; other serves the
		// blob when serves is set.
		delegateErr error
		serves      bool
		delegated   bool // the request came from another member
		breakAt     int64
		stallAt     int64
		wrong       bool
		wantErr     bool

		wantDelegatedTo []peer.ID
		wantOffsets     []int64 // the origin calls here
		wantFallbacks   float64
	}{
		{name: "chosen: fetches from the origin", members: []peer.ID{self},
			wantOffsets: []int64{0}},
		{name: "chosen: a broken stream resumes at its offset", members: []peer.ID{self}, breakAt: 7000,
			wantOffsets: []int64{0, 7000}},
		{name: "chosen: a stream that stalls is dropped and asked again at its offset", members: []peer.ID{self}, stallAt: 5000,
			wantOffsets: []int64{0, 5000}},
		{name: "chosen: wrong bytes from the origin fail the fetch", members: []peer.ID{self}, wrong: true,
			wantOffsets: []int64{0}, wantErr: true},
		{name: "not chosen: asks the chosen member and streams from it", members: []peer.ID{self, other}, serves: true,
			wantDelegatedTo: []peer.ID{other}},
		{name: "not chosen, the chosen member refuses: fetches it here", members: []peer.ID{self, other},
			delegateErr:     errors.New("refused: origin not configured"),
			wantDelegatedTo: []peer.ID{other}, wantOffsets: []int64{0}, wantFallbacks: 1},
		{name: "not chosen, the chosen member accepts but serves nothing: fetches it here", members: []peer.ID{self, other},
			wantDelegatedTo: []peer.ID{other}, wantOffsets: []int64{0}, wantFallbacks: 1},
		{name: "delegated to this node: never delegates on", members: []peer.ID{self, other}, delegated: true,
			wantOffsets: []int64{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			peers := map[peer.ID]fakePeer{other: nil}
			if tc.serves {
				peers[other] = holds(blob, nil)
			}
			net := &fakeNet{self: self, peers: peers}
			origin := &testOrigin{blob: blob, breakAt: tc.breakAt, stallAt: tc.stallAt, wrong: tc.wrong}
			del := &fakeDelegator{err: tc.delegateErr}
			fallbacks, bytesIn := counter(), counter()
			ps := NewPeers(PeersConfig{Net: net, Providers: net, Cluster: net, Idle: time.Second, Log: testLog(t)})
			src := NewOriginSource(OriginConfig{Self: self, Origins: origin, Peers: ps, Delegator: del,
				Fetchers: func(string) []peer.ID { return tc.members }, Idle: 200 * time.Millisecond,
				Metrics: OriginMetrics{Fallbacks: fallbacks, Bytes: bytesIn}, Log: testLog(t)})
			store := newStore(t)
			e := New(Config{Partials: store, Sources: []Source{ps, src}, Go: newTestOwner(t).Go, Log: testLog(t)})
			f, err := e.Start(Request{Digest: d, Size: int64(len(blob)), Origin: &Origin{Name: "up.example", Repo: "library/app"}, Delegated: tc.delegated})
			if err != nil {
				t.Fatal(err)
			}
			wait(t, f)
			if tc.wantErr {
				if f.Err() == nil || store.Held(d) {
					t.Fatalf("err %v, held %v; want a failure and no blob", f.Err(), store.Held(d))
				}
			} else if f.Err() != nil || !store.Held(d) {
				t.Fatalf("err %v, held %v; want the blob", f.Err(), store.Held(d))
			}
			var offsets []int64
			for _, c := range origin.callList() {
				offsets = append(offsets, c.offset)
				if c.repo != "library/app" {
					t.Errorf("origin asked for repository %q", c.repo)
				}
			}
			if !slices.Equal(offsets, tc.wantOffsets) {
				t.Errorf("origin calls at offsets %v, want %v", offsets, tc.wantOffsets)
			}
			del.mu.Lock()
			defer del.mu.Unlock()
			if !slices.Equal(del.asked, tc.wantDelegatedTo) {
				t.Errorf("delegated to %v, want %v", del.asked, tc.wantDelegatedTo)
			}
			for _, r := range del.reqs {
				if r != (OriginRequest{Digest: d, Size: int64(len(blob)), Origin: "up.example", Repo: "library/app"}) {
					t.Errorf("delegated %+v", r)
				}
			}
			if got := value(fallbacks); got != tc.wantFallbacks {
				t.Errorf("%v fallbacks counted, want %v", got, tc.wantFallbacks)
			}
			if len(tc.wantOffsets) > 0 && !tc.wantErr {
				if got := value(bytesIn); got != float64(len(blob)) {
					t.Errorf("%v origin bytes counted, want %d", got, len(blob))
				}
			}
		})
	}
}

// TestOriginSourceServesPeersWhileItFetches: on the chosen member, the
// bytes from the origin are served to peers as they arrive (depth 1), so
// the others cut through behind it.
func TestOriginSourceServesPeersWhileItFetches(t *testing.T) {
	t.Parallel()
	blob := bytes.Repeat([]byte("slow origin "), 10000)
	d := digest.FromBytes(blob)
	self := ptest.RandPeerIDFatal(t)
	release := make(chan struct{})
	slow := originFuncs{"up.example": func(ctx context.Context, _ string, _ digest.Digest, _, offset int64) (io.ReadCloser, error) {
		first := bytes.NewReader(blob[offset : offset+1000])
		rest := readerFunc(func(p []byte) (int, error) {
			select {
			case <-release:
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			return 0, io.EOF
		})
		return io.NopCloser(io.MultiReader(first, rest, bytes.NewReader(blob[offset+1000:]))), nil
	}}
	net := &fakeNet{self: self}
	ps := NewPeers(PeersConfig{Net: net, Providers: net, Cluster: net, Idle: time.Second, Log: testLog(t)})
	src := NewOriginSource(OriginConfig{Self: self, Origins: slow, Peers: ps, Delegator: &fakeDelegator{},
		Fetchers: func(string) []peer.ID { return []peer.ID{self} }, Idle: 10 * time.Second, Log: testLog(t)})
	e := New(Config{Partials: newStore(t), Sources: []Source{ps, src}, Go: newTestOwner(t).Go, Log: testLog(t)})
	f, err := e.Start(Request{Digest: d, Size: int64(len(blob)), Origin: &Origin{Name: "up.example", Repo: "app"}, Delegated: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Flowing():
	case <-time.After(10 * time.Second):
		t.Fatal("no bytes flowed")
	}
	r, size, depth := e.Reader(d, ptest.RandPeerIDFatal(t))
	if r == nil || size != int64(len(blob)) || depth != 1 {
		t.Fatalf("Reader for a peer: %v, size %d, depth %d; want the bytes so far at depth 1", r != nil, size, depth)
	}
	defer r.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(r, head); err != nil || !bytes.Equal(head, blob[:1000]) {
		t.Fatalf("a peer read %v before the origin finished", err)
	}
	close(release)
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(append(head, rest...), blob) {
		t.Fatalf("the peer's whole read: %v", err)
	}
	wait(t, f)
}

type originFuncs map[string]OriginFunc

func (o originFuncs) Origin(name string) (OriginFunc, bool) { fn, ok := o[name]; return fn, ok }

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestOriginRequestValidate: what a member may ask of the chosen member.
func TestOriginRequestValidate(t *testing.T) {
	t.Parallel()
	origins := originFuncs{"docker.io": nil}
	good := OriginRequest{Digest: digest.FromString("x"), Size: 10, Origin: "docker.io", Repo: "library/nginx"}
	tests := []struct {
		name   string
		edit   func(*OriginRequest)
		wantIn string // "" : accepted
	}{
		{name: "good", edit: func(*OriginRequest) {}},
		{name: "unknown origin", edit: func(r *OriginRequest) { r.Origin = "evil.example" }, wantIn: "not configured"},
		{name: "a URL as origin", edit: func(r *OriginRequest) { r.Origin = "http://169.254.169.254/latest" }, wantIn: "not configured"},
		{name: "oversized", edit: func(r *OriginRequest) { r.Size = MaxOriginBlobSize + 1 }, wantIn: "out of bounds"},
		{name: "no size", edit: func(r *OriginRequest) { r.Size = 0 }, wantIn: "out of bounds"},
		{name: "bad repo", edit: func(r *OriginRequest) { r.Repo = "../../v2/_catalog" }, wantIn: "invalid repository"},
		{name: "long repo", edit: func(r *OriginRequest) { r.Repo = strings.Repeat("a", 300) }, wantIn: "invalid repository"},
		{name: "bad digest", edit: func(r *OriginRequest) { r.Digest = "sha256:nothex" }, wantIn: "invalid digest"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.edit(&r)
			err := r.Validate(origins)
			if tc.wantIn == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantIn) {
				t.Fatalf("err = %v, want it to say %q", err, tc.wantIn)
			}
		})
	}
	if err := good.Validate(nil); err == nil {
		t.Error("accepted with no origins configured")
	}
}

// TestFetchWithoutOriginKeepsThePeersError: a blob with no origin that no
// peer holds fails with the peers' answer, as before origins existed.
func TestFetchWithoutOriginKeepsThePeersError(t *testing.T) {
	t.Parallel()
	self, member := ptest.RandPeerIDFatal(t), ptest.RandPeerIDFatal(t)
	net := &fakeNet{self: self, peers: map[peer.ID]fakePeer{member: nil}, providers: []peer.ID{member}}
	ps := NewPeers(PeersConfig{Net: net, Providers: net, Cluster: net, Idle: time.Second, Log: testLog(t)})
	origin := &testOrigin{blob: []byte("never asked")}
	src := NewOriginSource(OriginConfig{Self: self, Origins: origin, Peers: ps, Delegator: &fakeDelegator{},
		Fetchers: func(string) []peer.ID { return []peer.ID{self} }, Log: testLog(t)})
	e := New(Config{Partials: newStore(t), Sources: []Source{ps, src}, Go: newTestOwner(t).Go, Log: testLog(t)})
	f, err := e.Start(Request{Digest: digest.FromString("nobody"), Size: 6})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, f)
	if f.Err() == nil || !strings.Contains(f.Err().Error(), "from peers: peer "+member.String()) {
		t.Fatalf("err = %v, want the member's answer", f.Err())
	}
	if len(origin.callList()) != 0 {
		t.Error("a blob without an origin was fetched from one")
	}
}
