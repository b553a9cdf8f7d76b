package node

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
)

// Failover reads: a read that misses on a node is answered 404 only once
// the node has applied every write acknowledged before the read began;
// when it cannot learn that in time, it answers 503 with Retry-After,
// never 404 (kubelet and containerd take a 404 as final).

// putTag writes a small index manifest tagged tag through n and returns
// its digest.
func putTag(t *testing.T, n *Node, repo, tag string) digest.Digest {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{},
		"annotations": map[string]string{"tag": tag}})
	d := digest.FromBytes(body)
	rec := consensus.ManifestRecord{Repo: repo, Digest: d, MediaType: "application/vnd.oci.image.index.v1+json", Body: body}
	if err := n.meta.PutManifest(t.Context(), rec, tag); err != nil {
		t.Fatal(err)
	}
	return d
}

func setLag(n *Node, lag time.Duration) { n.meta.(interface{ SetLag(time.Duration) }).SetLag(lag) }

// behind fails the test unless n has not applied tag yet (the test needs
// the node behind its leader).
func behind(t *testing.T, n *Node, repo, tag string) {
	t.Helper()
	if _, err := n.meta.ResolveTag(repo, tag); !errors.Is(err, consensus.ErrNotFound) {
		t.Fatalf("the node applied %s:%s at once (%v): the test needs it behind", repo, tag, err)
	}
}

// TestFailoverReadWaitsForALeader: the leader acknowledged a tag and died
// before a follower applied it; while no leader is known, a GET of that tag
// on the follower waits for the new leader and then reads 200, not 404.
func TestFailoverReadWaitsForALeader(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	a := fn.add("a", nil)
	b := fn.add("a", nil)
	c := fn.add("a", nil)
	setLag(b, 300*time.Millisecond) // b learns of the commit late
	d := putTag(t, a, "r/app", "v1")
	behind(t, b, "r/app", "v1")

	fn.meta.Lead("") // a is gone; no leader elected yet
	fn.net.Cut(a.host.ID(), b.host.ID())
	fn.net.Cut(a.host.ID(), c.host.ID())
	elected := time.AfterFunc(400*time.Millisecond, func() { fn.meta.Lead(c.host.ID().String()) })
	defer elected.Stop()

	start := time.Now()
	m, err := b.GetManifest(t.Context(), "r/app", "v1")
	if err != nil {
		t.Fatalf("GET of an acknowledged tag on a survivor while the leader changes: %v (want it served once a leader is elected)", err)
	}
	if m.Digest != d {
		t.Errorf("served %s, want %s", m.Digest, d)
	}
	t.Logf("read answered after %v (leader elected after 400ms)", time.Since(start))
	if got := counterValue(t, b.metrics.catchUps.WithLabelValues("caught_up")); got != 1 {
		t.Errorf("meshreg_read_catchups_total{result=caught_up} = %v, want 1", got)
	}
}

// TestFailoverReadNoLeaderIs503: with no leader for longer than the read's
// bound, a miss is 503 UNAVAILABLE with a Retry-After, within the bound,
// and never 404; a hit is still served from local state at once.
func TestFailoverReadNoLeaderIs503(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	a := fn.add("a", nil)
	b := fn.add("a", nil)
	putTag(t, a, "r/app", "old")
	if _, err := b.meta.ResolveTag("r/app", "old"); err != nil { // b applies it
		t.Fatal(err)
	}
	setLag(b, time.Hour)
	putTag(t, a, "r/app", "v1")
	behind(t, b, "r/app", "v1")
	fn.meta.Lead("")

	start := time.Now()
	_, err := b.GetManifest(t.Context(), "r/app", "v1")
	took := time.Since(start)
	var oe *oci.Error
	switch {
	case errors.Is(err, oci.ManifestUnknown):
		t.Fatalf("GET of an acknowledged tag with no leader: 404 MANIFEST_UNKNOWN (%v); want 503", err)
	case !errors.As(err, &oe) || oe.HTTPStatus() != http.StatusServiceUnavailable:
		t.Fatalf("GET with no leader: %v, want 503 UNAVAILABLE", err)
	case oe.RetryAfter <= 0:
		t.Errorf("503 without Retry-After: %+v", oe)
	}
	if took > readCatchUpTimeout+time.Second {
		t.Errorf("the 503 took %v: bounded by %v", took, readCatchUpTimeout)
	}
	t.Logf("503 after %v: %v", took, err)
	if got := counterValue(t, b.metrics.catchUps.WithLabelValues("unavailable")); got != 1 {
		t.Errorf("meshreg_read_catchups_total{result=unavailable} = %v, want 1", got)
	}

	// Blob links and tag lists miss the same way (a client that gives up
	// sooner gets its 503 sooner).
	short, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := b.StatBlob(short, "r/app", digest.FromString("x")); !errors.Is(err, oci.Unavailable) {
		t.Errorf("HEAD of a blob with no leader: %v, want 503 UNAVAILABLE", err)
	}
	if _, err := b.Tags(short, "r/other", "", 10); !errors.Is(err, oci.Unavailable) {
		t.Errorf("tag list of an unknown repository with no leader: %v, want 503 UNAVAILABLE", err)
	}

	start = time.Now()
	if _, err := b.GetManifest(t.Context(), "r/app", "old"); err != nil {
		t.Errorf("GET of a tag the follower has, with no leader: %v, want it served from local state", err)
	}
	if took := time.Since(start); took > 100*time.Millisecond {
		t.Errorf("a hit took %v: hits must not wait for a leader", took)
	}
}

// TestFailoverReadNewLeaderBehind: the new leader has not applied the
// write its predecessor acknowledged (it learns the commit only in its own
// term); neither it nor a follower answers 404 for it.
func TestFailoverReadNewLeaderBehind(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	a := fn.add("a", nil)
	b := fn.add("a", nil)
	c := fn.add("a", nil)
	setLag(b, 300*time.Millisecond)
	setLag(c, time.Hour) // the new leader applies it in its own term (ReadIndex)
	d := putTag(t, a, "r/app", "v1")
	behind(t, b, "r/app", "v1")
	behind(t, c, "r/app", "v1")
	fn.net.Cut(a.host.ID(), b.host.ID())
	fn.net.Cut(a.host.ID(), c.host.ID())
	fn.meta.Lead(c.host.ID().String())

	for name, n := range map[string]*Node{"follower": b, "new leader": c} {
		m, err := n.GetManifest(t.Context(), "r/app", "v1")
		if err != nil {
			t.Errorf("GET of an acknowledged tag on the %s: %v", name, err)
		} else if m.Digest != d {
			t.Errorf("the %s served %s, want %s", name, m.Digest, d)
		}
	}
	// A tag nobody wrote is still 404, promptly.
	start := time.Now()
	if _, err := b.GetManifest(t.Context(), "r/app", "nope"); !errors.Is(err, oci.ManifestUnknown) {
		t.Errorf("GET of a tag nobody wrote: %v, want MANIFEST_UNKNOWN", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("the 404 took %v", took)
	}
}
