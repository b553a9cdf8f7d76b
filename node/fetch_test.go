package node

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/node/fetch"
	dto "github.com/prometheus/client_model/go"
)

// serveCounter counts the blob streams a node sends to peers, passing each
// through fault (nil: honest).
type serveCounter struct {
	streams atomic.Int32
	fault   func(r io.Reader) io.Reader
}

func (c *serveCounter) option() Option {
	return WithServeFault(func(_ digest.Digest, r io.Reader) io.Reader {
		c.streams.Add(1)
		if c.fault == nil {
			return r
		}
		return c.fault(r)
	})
}

// corrupt flips one bit of the first byte: the size is right, only the
// digest tells.
func corrupt(r io.Reader) io.Reader { return &flipFirst{r: r} }

type flipFirst struct {
	r    io.Reader
	done bool
}

func (f *flipFirst) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && !f.done {
		p[0] ^= 1
		f.done = true
	}
	return n, err
}

// stallAfter sends the first n bytes, then nothing until stop closes.
func stallAfter(n int64, stop <-chan struct{}) func(io.Reader) io.Reader {
	return func(r io.Reader) io.Reader {
		return io.MultiReader(io.LimitReader(r, n), readerFunc(func([]byte) (int, error) {
			<-stop
			return 0, io.ErrUnexpectedEOF
		}))
	}
}

// failAfter sends the first n bytes, then fails (a disk error mid-blob).
func failAfter(n int64) func(io.Reader) io.Reader {
	return func(r io.Reader) io.Reader {
		return io.MultiReader(io.LimitReader(r, n), iotest.ErrReader(errors.New("disk read failed")))
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestFetchFailsOverFromABadNearestHolder: the holder in the puller's own
// zone (tried first) sends wrong bytes, stalls or fails mid-blob; the
// client still gets the right blob, from the holder in the other zone,
// and only the liar is penalised.
func TestFetchFailsOverFromABadNearestHolder(t *testing.T) {
	t.Parallel()
	const size = 3 << 20
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	for _, tc := range []struct {
		name     string
		fault    func(io.Reader) io.Reader
		penalise bool
	}{
		{name: "corrupt bytes", fault: corrupt, penalise: true},
		{name: "stalls mid-blob", fault: stallAfter(size/2, stop)},
		{name: "fails mid-blob", fault: failAfter(size / 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fn := newFakeNet(t)
			fn.inMemory = true
			bad, honest := &serveCounter{fault: tc.fault}, &serveCounter{}
			puller := fn.add("a", nil)
			near := fn.add("a", nil, bad.option())
			far := fn.add("b", nil, honest.option())
			blob, d := randomBlob(1, size)
			hold(t, near, "r/app", blob)
			hold(t, far, "r/app", blob)

			start := time.Now()
			got, err := pullRetrying(t, puller, "r/app", d)
			if err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("pull past the bad holder: %d bytes, %v", len(got), err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the pull took %v: it waited on the bad holder instead of moving on", took)
			}
			if bad.streams.Load() == 0 {
				t.Errorf("the bad holder in the puller's zone was not tried first")
			}
			if honest.streams.Load() == 0 {
				t.Errorf("the honest holder served nothing")
			}
			if got := penalised(puller, near.host.ID().String()); got != tc.penalise {
				t.Errorf("bad holder penalised = %v, want %v", got, tc.penalise)
			}
			if penalised(puller, far.host.ID().String()) {
				t.Errorf("the honest holder was penalised too")
			}
			if p := counterValue(t, puller.metrics.penalties); (p > 0) != tc.penalise {
				t.Errorf("meshreg_peer_penalties_total = %v, want penalties: %v", p, tc.penalise)
			}
		})
	}
}

// pullRetrying pulls d through n as a client that retries a download cut
// short does (docker, containerd), for up to 5 s. It fails the test if a
// complete blob that does not match d is ever handed out.
func pullRetrying(t *testing.T, n *Node, repo string, d digest.Digest) ([]byte, error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := pull(t.Context(), n, repo, d)
		if err == nil && digest.FromBytes(got) != d {
			t.Fatalf("the client received a complete blob of %d bytes that does not match %s", len(got), d)
		}
		if err == nil || time.Now().After(deadline) {
			return got, err
		}
		t.Logf("pull cut short, retrying: %d bytes, %v", len(got), err)
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFetchTriesAPenalisedHolderLast: once a holder sent wrong bytes, the
// next blob comes from another holder first, even a farther one.
func TestFetchTriesAPenalisedHolderLast(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	bad, honest := &serveCounter{fault: corrupt}, &serveCounter{}
	puller := fn.add("a", nil)
	near := fn.add("a", nil, bad.option())
	far := fn.add("b", nil, honest.option())
	first, d1 := randomBlob(2, 1<<20)
	second, d2 := randomBlob(3, 1<<20)
	for _, b := range [][]byte{first, second} {
		hold(t, near, "r/app", b)
		hold(t, far, "r/app", b)
	}
	if got, err := pullRetrying(t, puller, "r/app", d1); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("first pull: %d bytes, %v", len(got), err)
	}
	if !penalised(puller, near.host.ID().String()) {
		t.Fatalf("the holder that sent wrong bytes is not penalised")
	}
	before := bad.streams.Load()
	got, err := pull(t.Context(), puller, "r/app", d2)
	if err != nil || !bytes.Equal(got, second) {
		t.Fatalf("second pull: %d bytes, %v", len(got), err)
	}
	if bad.streams.Load() != before {
		t.Errorf("the penalised holder was asked for the next blob before the honest one")
	}
}

// TestFetchPrefersZoneThenRegionThenLeastLoaded: with a blob on holders in
// another region, the same region and the same zone, a pull is served by
// the same zone's holder; among two in the same zone, by the less loaded.
func TestFetchPrefersZoneThenRegionThenLeastLoaded(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	puller := fn.add("a", nil)
	counters := map[string]*serveCounter{}
	add := func(name, region, zone string) *Node {
		c := &serveCounter{}
		counters[name] = c
		return fn.add(zone, func(cfg *Config) { cfg.Region = region }, c.option())
	}
	holders := []*Node{
		add("other region", "r2", "a"),
		add("same region", "r1", "b"),
		add("same zone, busy", "r1", "a"),
		add("same zone, idle", "r1", "a"),
	}
	holders[2].load.add(1<<30, time.Now()) // sent a GiB to peers lately
	blob, d := randomBlob(4, 1<<20)
	for _, h := range holders {
		hold(t, h, "r/app", blob)
	}
	if got, err := pull(t.Context(), puller, "r/app", d); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("pull: %d bytes, %v", len(got), err)
	}
	for name, c := range counters {
		want := int32(0)
		if name == "same zone, idle" {
			want = 1
		}
		if got := c.streams.Load(); got != want {
			t.Errorf("holder %q sent %d streams, want %d", name, got, want)
		}
	}
}

// counterValue reads a counter as /metrics would show it.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// slowRetry is a blob store whose second partial copy of a blob (the
// fetch's retry after wrong bytes) takes a while to start: the moment
// between two attempts, made long enough to land in.
type slowRetry struct {
	BlobStore
	partials atomic.Int32
}

func (s *slowRetry) NewPartial(d digest.Digest, size int64) (fetch.Partial, error) {
	if s.partials.Add(1) == 2 {
		time.Sleep(300 * time.Millisecond)
	}
	return s.BlobStore.NewPartial(d, size)
}

// TestPullDuringARefetchWaits: the first holder's bytes failed the digest
// and the next attempt has not begun; a client that retries at once is
// served the blob once it arrives, not told the blob is unknown.
func TestPullDuringARefetchWaits(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	puller := fn.add("a", nil)
	puller.blobs = &slowRetry{BlobStore: puller.blobs} // before any request: no race
	liar := fn.add("a", nil, (&serveCounter{fault: corrupt}).option())
	honest := fn.add("b", nil)
	blob, d := randomBlob(5, 1<<20)
	hold(t, liar, "r/app", blob)
	hold(t, honest, "r/app", blob)

	got, err := pull(t.Context(), puller, "r/app", d)
	if err == nil && !bytes.Equal(got, blob) {
		t.Fatalf("the first pull handed out %d wrong bytes without an error", len(got))
	}
	t.Logf("first pull: %d bytes, %v", len(got), err)
	got, err = pull(t.Context(), puller, "r/app", d) // at once, while the slow holder starts
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("a pull retried during the re-fetch: %d bytes, %v; want the blob", len(got), err)
	}
}
