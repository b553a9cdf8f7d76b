package node

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshreg/meshreg/blobstore"
)

// TestCorruptCopyIsReplacedFromAPeer: a client read finds this node's copy
// of a blob damaged. The client gets an error before the end, never the
// wrong bytes; the copy is quarantined and counted, a good one is fetched
// from a peer, and the next read serves it.
func TestCorruptCopyIsReplacedFromAPeer(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	fn.inMemory = true
	holder := fn.add("a", nil)
	peer := fn.add("b", nil)
	blob, d := randomBlob(7, 1<<20)
	hold(t, holder, "r/app", blob)
	hold(t, peer, "r/app", blob)
	if !fn.mem[holder].Corrupt(d) {
		t.Fatal("the holder does not hold the blob")
	}

	got, err := pull(t.Context(), holder, "r/app", d)
	if !errors.Is(err, blobstore.ErrCorrupt) || len(got) >= len(blob) {
		t.Fatalf("reading the damaged copy: %d bytes, %v; want ErrCorrupt before the end", len(got), err)
	}
	got, err = pullRetrying(t, holder, "r/app", d)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("reading after the quarantine: %d bytes, %v; want the blob from the peer", len(got), err)
	}
	st := holder.Status(context.Background()).(Status).Blobs
	if st.Corrupt != 1 || st.Quarantined != 1 {
		t.Errorf("status: %d corrupt, %d quarantined; want 1 and 1", st.Corrupt, st.Quarantined)
	}
	// The client's read streams the peer's bytes as they arrive; the copy
	// is committed to the store just after the last of them.
	deadline := time.Now().Add(5 * time.Second)
	for !fn.mem[holder].Held(d) {
		if time.Now().After(deadline) {
			t.Fatal("the good copy fetched from the peer is not held 5s after the read")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestScrubReplacesRotFromAPeer: decay the blob store cannot see (the copy
// is still held) is found by the scrub's forced re-hash; the copy is
// quarantined and a good one fetched from a peer.
func TestScrubReplacesRotFromAPeer(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	fn.inMemory = true
	fast := func(c *Config) { c.ScrubRate = 1 << 40 }
	holder := fn.add("a", fast)
	peer := fn.add("b", nil)
	blob, d := randomBlob(8, 1<<20)
	hold(t, holder, "r/app", blob)
	hold(t, peer, "r/app", blob)
	if !fn.mem[holder].Rot(d) || !fn.mem[holder].Held(d) {
		t.Fatal("the rotten copy is not held")
	}

	if blobs, _, corrupt := holder.scrub.pass(t.Context()); blobs != 0 || corrupt != 1 {
		t.Fatalf("scrub pass: %d good, %d corrupt; want the one blob found corrupt", blobs, corrupt)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !fn.mem[holder].Held(d) {
		if time.Now().After(deadline) {
			t.Fatal("no good copy was fetched within 5s of the scrub")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, err := pull(t.Context(), holder, "r/app", d); err != nil || !bytes.Equal(got, blob) {
		t.Errorf("reading the copy fetched after the scrub: %d bytes, %v", len(got), err)
	}
	if st := holder.Status(context.Background()).(Status); st.Blobs.Corrupt != 1 || st.Scrub.CorruptFound != 1 {
		t.Errorf("status: %d corrupt, scrub found %d; want 1 and 1", st.Blobs.Corrupt, st.Scrub.CorruptFound)
	}
}
