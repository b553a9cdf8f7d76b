package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// eventually fails the test unless cond holds within a few seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// loopFunc is a loop whose body is a function that only ever ends with
// ctx (the node's own loops are types, each in its loop_*.go).
type loopFunc func(ctx context.Context)

func (f loopFunc) Run(ctx context.Context) error {
	f(ctx)
	return nil
}

// runInBackground runs l until the test ends (or stop is called) and
// returns stop, which cancels it and returns what Run returned.
func runInBackground(t *testing.T, l loop) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

func TestWorkers(t *testing.T) {
	t.Parallel()
	w := newWorkers(context.WithCancel(context.Background()))
	var finished atomic.Bool
	started := make(chan struct{})
	if !w.Go(func() {
		close(started)
		<-w.Context().Done() // work that runs until shutdown begins
		time.Sleep(10 * time.Millisecond)
		finished.Store(true)
	}) {
		t.Fatal("Go refused work before Close")
	}
	<-started
	w.Close()
	if !finished.Load() {
		t.Error("Close returned before the work it accepted finished")
	}
	if w.Go(func() { t.Error("work ran after Close") }) {
		t.Error("Go accepted work after Close")
	}
	w.Close() // again: only waits
}

func TestWorkersGoDuringClose(t *testing.T) {
	t.Parallel()
	// Work that starts more work while Close waits (a fetch announcing
	// its blob) is refused, not raced against the wait.
	w := newWorkers(context.WithCancel(context.Background()))
	refused := make(chan bool, 1)
	w.Go(func() {
		<-w.Context().Done()
		refused <- !w.Go(func() {})
	})
	w.Close()
	if !<-refused {
		t.Error("Go accepted work once Close began")
	}
}

// blockingLoop runs until ctx ends and says when it stopped.
type blockingLoop struct{ stopped chan struct{} }

func (b blockingLoop) Run(ctx context.Context) error {
	<-ctx.Done()
	close(b.stopped)
	return nil
}

// failingLoop fails at once.
type failingLoop struct{ err error }

func (f failingLoop) Run(context.Context) error { return f.err }

func TestRunLoops(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	tests := []struct {
		name    string
		fail    bool // one loop fails
		wantErr error
	}{
		{name: "ctx ends: every loop stops, no error"},
		{name: "a loop fails: the others stop, its error returns", fail: true, wantErr: boom},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := blockingLoop{make(chan struct{})}, blockingLoop{make(chan struct{})}
			loops := []loop{a, b, loopFunc(func(ctx context.Context) { <-ctx.Done() })}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.fail {
				loops = append(loops, failingLoop{boom})
			} else {
				time.AfterFunc(10*time.Millisecond, cancel)
			}
			err := runLoops(ctx, loops...)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("runLoops = %v, want %v", err, tc.wantErr)
			}
			for i, l := range []blockingLoop{a, b} {
				select {
				case <-l.stopped:
				default:
					t.Errorf("loop %d still runs after runLoops returned", i)
				}
			}
		})
	}
}

func TestStorageWatch(t *testing.T) {
	t.Parallel()
	failed := make(chan error, 1)
	disk := errors.New("badger: disk gone")
	failed <- disk
	err := storageWatch{failed: failed}.Run(context.Background())
	if !errors.Is(err, disk) {
		t.Fatalf("Run = %v, want the storage failure", err)
	}
	// Without a store that can fail (New), it waits for ctx.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := (storageWatch{}).Run(ctx); err != nil {
		t.Fatalf("Run with no failure = %v, want nil", err)
	}
}

// fakeBlobs lists fixed digests.
type fakeBlobs []digest.Digest

func (f fakeBlobs) Walk(fn func(digest.Digest, int64) bool) error {
	for _, d := range f {
		if !fn(d, 1) {
			break
		}
	}
	return nil
}

// tableSize is a routing table of a fixed size.
type tableSize int

func (s tableSize) RoutingTableSize() int { return int(s) }

func TestReproviderAnnouncesEveryBlob(t *testing.T) {
	t.Parallel()
	blobs := fakeBlobs{digest.FromString("a"), digest.FromString("b"), digest.FromString("c")}
	var mu sync.Mutex
	provided := map[digest.Digest]int{}
	r := newReprovider(blobs, tableSize(1), func(d digest.Digest) {
		mu.Lock()
		provided[d]++
		mu.Unlock()
	}, time.Hour, tlog.Logger(t, slog.LevelWarn))
	stop := runInBackground(t, r)
	eventually(t, "every blob announced", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(provided) == len(blobs)
	})
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	for _, d := range blobs {
		if provided[d] != 1 {
			t.Errorf("%s announced %d times in one sweep, want 1", d, provided[d])
		}
	}
}

func TestReproviderWaitsForPeers(t *testing.T) {
	t.Parallel()
	r := newReprovider(fakeBlobs{digest.FromString("a")}, tableSize(0), func(digest.Digest) {
		t.Error("announced with an empty routing table")
	}, time.Hour, tlog.Logger(t, slog.LevelWarn))
	stop := runInBackground(t, r)
	time.Sleep(20 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestMesherRoundAtOnceThenEveryInterval(t *testing.T) {
	t.Parallel()
	var rounds atomic.Int64
	m := newMesher(time.Hour, func(context.Context) { rounds.Add(1) })
	stop := runInBackground(t, m)
	eventually(t, "the first round", func() bool { return rounds.Load() == 1 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := rounds.Load(); got != 1 {
		t.Errorf("%d rounds within the first interval, want 1", got)
	}

	rounds.Store(0)
	stop = runInBackground(t, newMesher(time.Millisecond, func(context.Context) { rounds.Add(1) }))
	eventually(t, "rounds every interval", func() bool { return rounds.Load() >= 3 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// fakeExpirer expires the counts it is given, one per call.
type fakeExpirer struct {
	mu     sync.Mutex
	counts []int
	idle   time.Duration
}

func (f *fakeExpirer) ExpireUploads(idle time.Duration) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.idle = idle
	if len(f.counts) == 0 {
		return 0
	}
	c := f.counts[0]
	f.counts = f.counts[1:]
	return c
}

func TestUploadExpiry(t *testing.T) {
	t.Parallel()
	uploads := &fakeExpirer{counts: []int{0, 2, 0, 1}}
	var forgot atomic.Int64
	u := newUploadExpiry(uploads, 4*time.Millisecond, func() { forgot.Add(1) }, tlog.Logger(t, slog.LevelWarn))
	if got := u.every(); got != time.Millisecond {
		t.Errorf("checks every %v, want a quarter of the idle timeout", got)
	}
	if got := newUploadExpiry(uploads, time.Hour, nil, nil).every(); got != time.Minute {
		t.Errorf("checks every %v with an hour's timeout, want a minute", got)
	}
	stop := runInBackground(t, u)
	eventually(t, "every count expired", func() bool {
		uploads.mu.Lock()
		defer uploads.mu.Unlock()
		return len(uploads.counts) == 0
	})
	eventually(t, "sessions forgotten", func() bool { return forgot.Load() == 2 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if got := forgot.Load(); got != 2 {
		t.Errorf("forgot sessions %d times, want 2 (once per check that expired some)", got)
	}
	if uploads.idle != 4*time.Millisecond {
		t.Errorf("expired uploads idle for %v, want the timeout", uploads.idle)
	}
}

func TestVoucherAsksOncePerIntervalAndAdmitsVouched(t *testing.T) {
	t.Parallel()
	member, stranger, by := peer.ID("member-behind"), peer.ID("stranger"), peer.ID("member")
	unknown := make(chan peer.ID)
	var mu sync.Mutex
	asked := map[peer.ID]int{}
	var admitted []peer.ID
	v := newVoucher(unknown, func(_ context.Context, p peer.ID) (peer.ID, bool) {
		mu.Lock()
		defer mu.Unlock()
		asked[p]++
		return by, p == member
	}, func(p peer.ID) {
		mu.Lock()
		defer mu.Unlock()
		admitted = append(admitted, p)
	}, tlog.Logger(t, slog.LevelWarn))
	stop := runInBackground(t, v)
	for _, p := range []peer.ID{stranger, member, stranger, member, stranger} {
		unknown <- p // unbuffered: the voucher took each in turn
	}
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if asked[stranger] != 1 || asked[member] != 1 {
		t.Errorf("members asked %v, want once per peer within vouchEvery", asked)
	}
	if len(admitted) != 1 || admitted[0] != member {
		t.Errorf("admitted %v, want only the peer a member vouched for", admitted)
	}
}

// fakeScrubbed holds blobs of 10 bytes each; those in corrupt fail.
type fakeScrubbed struct {
	fakeBlobs
	corrupt map[digest.Digest]bool
}

func (f fakeScrubbed) Verify(_ context.Context, d digest.Digest, force bool, throttle func(int) error) error {
	if !force {
		return errors.New("the scrub must re-hash verified blobs too")
	}
	if err := throttle(10); err != nil {
		return err
	}
	if f.corrupt[d] {
		return fmt.Errorf("%w: %s", blobstore.ErrCorrupt, d)
	}
	return nil
}

// fakeCounter sums what is added to it.
type fakeCounter struct {
	mu  sync.Mutex
	sum float64
}

func (c *fakeCounter) Add(v float64) { c.mu.Lock(); c.sum += v; c.mu.Unlock() }

func (c *fakeCounter) value() float64 { c.mu.Lock(); defer c.mu.Unlock(); return c.sum }

func TestScrubberPass(t *testing.T) {
	t.Parallel()
	bad := digest.FromString("bad")
	blobs := fakeScrubbed{fakeBlobs{digest.FromString("a"), bad, digest.FromString("b")}, map[digest.Digest]bool{bad: true}}
	scrubbed := &fakeCounter{}
	s := newScrubber(blobs, scrubbed, 1<<30, time.Millisecond, tlog.Logger(t, slog.LevelWarn))
	stop := runInBackground(t, s)
	eventually(t, "a pass", func() bool { return s.status().Passes >= 1 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	st := s.status()
	if st.Running {
		t.Error("status says running after Run returned")
	}
	if st.LastPassBlobs != 2 || st.LastPassBytes != 20 {
		t.Errorf("last pass checked %d blobs, %d bytes; want 2 good blobs of 10 bytes", st.LastPassBlobs, st.LastPassBytes)
	}
	if st.CorruptFound < 1 {
		t.Errorf("corrupt found %d, want the bad blob counted", st.CorruptFound)
	}
	if got := scrubbed.value(); got < 30 {
		t.Errorf("scrubbed bytes metric %v, want at least one pass of 30", got)
	}
}

func TestScrubberOff(t *testing.T) {
	t.Parallel()
	s := newScrubber(fakeScrubbed{}, &fakeCounter{}, 0, time.Millisecond, nil)
	if err := s.Run(context.Background()); err != nil { // returns at once
		t.Fatalf("Run with rate 0 = %v", err)
	}
}
