package node

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"
)

// throttle sends at most chunk bytes every pause: a slow link.
func throttle(chunk int, pause time.Duration) func(io.Reader) io.Reader {
	return func(r io.Reader) io.Reader {
		return readerFunc(func(p []byte) (int, error) {
			time.Sleep(pause)
			return r.Read(p[:min(len(p), chunk)])
		})
	}
}

// TestSimultaneousPullsFormAChain: two nodes pull a blob that only a slow
// origin holds, one just after the other. The origin sends it once; the
// second puller gets its bytes from the first while the first is still
// fetching them (cut-through), and both clients get the whole blob.
func TestSimultaneousPullsFormAChain(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	origin, relay := &serveCounter{fault: throttle(64<<10, 20*time.Millisecond)}, &serveCounter{}
	holder := fn.add("a", nil, origin.option())
	first := fn.add("a", nil, relay.option())
	second := fn.add("a", nil)
	blob, d := randomBlob(6, 2<<20) // about 650 ms from the origin
	hold(t, holder, "r/app", blob)

	var wg sync.WaitGroup
	var got1 []byte
	var err1 error
	wg.Go(func() { got1, err1 = pull(t.Context(), first, "r/app", d) })
	deadline := time.Now().Add(5 * time.Second)
	for origin.streams.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // the first bytes have reached the first puller
	got2, err2 := pull(t.Context(), second, "r/app", d)
	wg.Wait()
	if err1 != nil || !bytes.Equal(got1, blob) {
		t.Fatalf("first pull: %d bytes, %v", len(got1), err1)
	}
	if err2 != nil || !bytes.Equal(got2, blob) {
		t.Fatalf("second pull: %d bytes, %v", len(got2), err2)
	}
	if n := origin.streams.Load(); n != 1 {
		t.Errorf("the origin sent the blob %d times, want once", n)
	}
	if n := relay.streams.Load(); n != 1 {
		t.Errorf("the first puller sent the blob on %d times, want once (to the second)", n)
	}
}
