package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// testOwner is the owner of a test's fetch goroutines (the node's workers
// in production): close stops taking work, ends the context and waits.
type testOwner struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

var errStopped = errors.New("test owner: stopped")

func newTestOwner(t *testing.T) *testOwner {
	ctx, cancel := context.WithCancel(context.Background())
	o := &testOwner{ctx: ctx, cancel: cancel}
	t.Cleanup(o.close)
	return o
}

func (o *testOwner) Go(fn func(context.Context)) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return errStopped
	}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		fn(o.ctx)
	}()
	return nil
}

func (o *testOwner) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
	o.cancel()
	o.wg.Wait()
}

func testLog(t *testing.T) *slog.Logger { return tlog.Logger(t, slog.LevelDebug) }

func newStore(t *testing.T) testStore {
	s, err := blobstore.Open(t.TempDir(), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return testStore{s}
}

// testStore is a blob store on disk as Partials: Go has no covariant
// results, so *blobstore.Store's NewPartial (a *blobstore.Partial) needs
// this one-line conversion to the Partial interface.
type testStore struct{ *blobstore.Store }

func (s testStore) NewPartial(d digest.Digest, size int64) (Partial, error) {
	return s.Store.NewPartial(d, size)
}

// sourceFunc is a Source made of a function.
type sourceFunc struct {
	name string
	fill func(ctx context.Context, f *Fetch) error
}

func (s sourceFunc) Name() string                             { return s.name }
func (s sourceFunc) Fill(ctx context.Context, f *Fetch) error { return s.fill(ctx, f) }

// serving is a source that writes blob into the fetch once release closes.
func serving(blob []byte, release <-chan struct{}, calls *int32mu) Source {
	return sourceFunc{name: "test", fill: func(ctx context.Context, f *Fetch) error {
		calls.add()
		select {
		case <-release:
		case <-ctx.Done():
			return ctx.Err()
		}
		part := f.Current()
		f.SetSource("origin", 1)
		if _, err := f.Writer(part).Write(blob); err != nil {
			return err
		}
		return part.Commit()
	}}
}

type int32mu struct {
	mu sync.Mutex
	n  int
}

func (c *int32mu) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *int32mu) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func wait(t *testing.T, f *Fetch) {
	t.Helper()
	select {
	case <-f.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch did not end")
	}
}

func TestStartSharesOneFetchPerDigest(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	owner := newTestOwner(t)
	blob := []byte("one blob, many readers")
	d := digest.FromBytes(blob)
	release := make(chan struct{})
	var calls int32mu
	e := New(Config{Partials: store, Sources: []Source{serving(blob, release, &calls)}, Go: owner.Go, Log: testLog(t)})

	var wg sync.WaitGroup
	got := make([]*Fetch, 8)
	for i := range got {
		wg.Go(func() {
			f, err := e.Start(Request{Digest: d, Size: int64(len(blob)), ForClient: i == 0})
			if err != nil {
				t.Error(err)
			}
			got[i] = f
		})
	}
	wg.Wait()
	for _, f := range got[1:] {
		if f != got[0] {
			t.Fatal("two starts of one digest made two fetches")
		}
	}
	if n := e.InProgress(); n != 1 {
		t.Fatalf("InProgress = %d, want 1", n)
	}
	r, ok := got[0].Current().NewReader()
	if !ok {
		t.Fatal("no reader of the fetch in progress")
	}
	defer r.Close()
	close(release)
	wait(t, got[0])
	if err := got[0].Err(); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(r); err != nil || !bytes.Equal(b, blob) {
		t.Fatalf("a reader that joined early read %q, %v", b, err)
	}
	if calls.get() != 1 || e.InProgress() != 0 || !store.Held(d) {
		t.Fatalf("calls %d, in progress %d, held %v; want 1, 0, true", calls.get(), e.InProgress(), store.Held(d))
	}
}

func TestSourcesAreTriedInOrderUntilOneBringsTheBlob(t *testing.T) {
	t.Parallel()
	blob := []byte("second time lucky")
	d := digest.FromBytes(blob)
	release := make(chan struct{})
	close(release)
	tests := []struct {
		name    string
		sources func(calls *int32mu) []Source
		wantErr string
	}{
		{name: "the first fails, the second serves", sources: func(c *int32mu) []Source {
			return []Source{sourceFunc{name: "peers", fill: func(context.Context, *Fetch) error { c.add(); return ErrNoProvider }}, serving(blob, release, c)}
		}},
		{name: "every source fails", sources: func(c *int32mu) []Source {
			fail := sourceFunc{name: "peers", fill: func(context.Context, *Fetch) error { c.add(); return ErrNoProvider }}
			return []Source{fail, sourceFunc{name: "upstream", fill: fail.fill}}
		}, wantErr: "fetching blob " + d.String() + " (17 bytes) from peers, upstream: no peer holds it"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			store := newStore(t)
			var calls int32mu
			e := New(Config{Partials: store, Sources: tc.sources(&calls), Go: newTestOwner(t).Go, Log: testLog(t)})
			f, err := e.Start(Request{Digest: d, Size: int64(len(blob))})
			if err != nil {
				t.Fatal(err)
			}
			wait(t, f)
			if calls.get() != 2 {
				t.Errorf("%d sources asked, want 2", calls.get())
			}
			if tc.wantErr == "" {
				if f.Err() != nil || !store.Held(d) {
					t.Fatalf("err %v, held %v; want the blob", f.Err(), store.Held(d))
				}
				return
			}
			if f.Err() == nil || f.Err().Error() != tc.wantErr || !errors.Is(f.Err(), ErrNoProvider) {
				t.Fatalf("err = %v, want %q", f.Err(), tc.wantErr)
			}
			if err := f.Current().(*blobstore.Partial).Err(); err == nil {
				t.Error("the failed fetch's partial did not fail its readers")
			}
		})
	}
}

func TestStartIsRefusedWithoutRoomOrOwner(t *testing.T) {
	t.Parallel()
	full := errors.New("disk full")
	owner := newTestOwner(t)
	owner.close()
	tests := []struct {
		name string
		room func() error
		goFn func(func(context.Context)) error
		want error
	}{
		{name: "no room", room: func() error { return full }, goFn: newTestOwner(t).Go, want: full},
		{name: "owner stopped", goFn: owner.Go, want: errStopped},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			never := sourceFunc{name: "peers", fill: func(context.Context, *Fetch) error { t.Error("a refused fetch ran"); return nil }}
			e := New(Config{Partials: newStore(t), Sources: []Source{never}, Room: tc.room, Go: tc.goFn, Log: testLog(t)})
			if _, err := e.Start(Request{Digest: digest.FromString("x"), Size: 1}); !errors.Is(err, tc.want) {
				t.Fatalf("Start = %v, want %v", err, tc.want)
			}
			if e.InProgress() != 0 {
				t.Fatal("a refused fetch is in progress")
			}
		})
	}
}

// TestReaderServesPartialBytesOnlyFromASource: a fetch serves what it has
// to peers once it has a source, never to that source itself (two nodes
// must not wait on each other).
func TestReaderServesPartialBytesOnlyFromASource(t *testing.T) {
	t.Parallel()
	blob := []byte("cut-through")
	d := digest.FromBytes(blob)
	sourced, finish := make(chan struct{}), make(chan struct{})
	src := sourceFunc{name: "peers", fill: func(ctx context.Context, f *Fetch) error {
		<-sourced
		part := f.Current()
		f.SetSource("origin", 1)
		if _, err := f.Writer(part).Write(blob[:4]); err != nil {
			return err
		}
		<-finish
		if _, err := f.Writer(part).Write(blob[4:]); err != nil {
			return err
		}
		return part.Commit()
	}}
	e := New(Config{Partials: newStore(t), Sources: []Source{src}, Go: newTestOwner(t).Go, Log: testLog(t)})
	f, err := e.Start(Request{Digest: d, Size: int64(len(blob))})
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := e.Reader(d, "other"); r != nil {
		t.Fatal("served partial bytes before the fetch had a source")
	}
	close(sourced)
	<-f.Flowing()
	if r, _, _ := e.Reader(d, "origin"); r != nil {
		t.Fatal("served partial bytes back to their source")
	}
	r, size, depth := e.Reader(d, "other")
	if r == nil || size != int64(len(blob)) || depth != 1 {
		t.Fatalf("Reader = %v, %d, %d; want a reader, %d, 1", r, size, depth, len(blob))
	}
	close(finish)
	b, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(b, blob) {
		t.Fatalf("read %q, %v", b, err)
	}
	wait(t, f)
	if r, _, _ := e.Reader(d, "other"); r != nil {
		t.Fatal("a finished fetch still serves")
	}
}

// TestAFetchFromAnOriginOfABlobHeldEndsAtOnce: the asker of a fetch that
// may go to an origin checked its store before asking, but a fetch of the
// same blob may have committed in between; starting another would have
// the origin serve the cluster the blob twice (seen: the chosen node, asked
// by a slower peer just after its own fetch committed, fetched again).
func TestAFetchFromAnOriginOfABlobHeldEndsAtOnce(t *testing.T) {
	t.Parallel()
	store := newStore(t)
	owner := newTestOwner(t)
	blob := []byte("fetched from the origin once")
	d := digest.FromBytes(blob)
	release := make(chan struct{})
	close(release)
	var calls int32mu
	e := New(Config{Partials: store, Sources: []Source{serving(blob, release, &calls)}, Go: owner.Go, Held: store.Held, Log: testLog(t)})
	origin := &Origin{Name: "docker.io", Repo: "library/app"}

	first, err := e.Start(Request{Digest: d, Size: int64(len(blob)), Origin: origin})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, first)
	if err := first.Err(); err != nil || calls.get() != 1 {
		t.Fatalf("first fetch: %v, %d source calls; want it fetched once", err, calls.get())
	}
	// Committed and gone from the fetches in progress: the next asker.
	again, err := e.Start(Request{Digest: d, Size: int64(len(blob)), Origin: origin, Delegated: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-again.Done():
	default:
		t.Fatal("a fetch of a blob held here did not end at once")
	}
	if err := again.Err(); err != nil || calls.get() != 1 {
		t.Fatalf("second fetch: %v, %d source calls; want done with no call to the source", err, calls.get())
	}
	// A fetch that goes to no origin is not checked (one replacing a copy
	// of the wrong size starts before that copy is moved aside).
	plain, err := e.Start(Request{Digest: d, Size: int64(len(blob))})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, plain)
	if calls.get() != 2 {
		t.Errorf("a fetch with no origin: %d source calls, want 2 (it ran)", calls.get())
	}
}
