package node

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
)

// TestReadCatchesUpBeforeNotFound: a tag written through the leader a
// moment ago, not yet applied on a follower, is served by the follower
// (it waits to catch up) rather than answered 404; a tag that does not
// exist still is 404.
func TestReadCatchesUpBeforeNotFound(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	leader := fn.add("a", nil)
	follower := fn.add("a", nil)
	follower.meta.(interface{ SetLag(time.Duration) }).SetLag(300 * time.Millisecond)

	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []any{}})
	d := digest.FromBytes(body)
	rec := consensus.ManifestRecord{Repo: "r/app", Digest: d, MediaType: "application/vnd.oci.image.index.v1+json", Body: body}
	if err := leader.meta.PutManifest(t.Context(), rec, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := follower.meta.ResolveTag("r/app", "v1"); !errors.Is(err, consensus.ErrNotFound) {
		t.Fatalf("the follower applied the write at once (%v): the test needs it behind", err)
	}
	m, err := follower.GetManifest(t.Context(), "r/app", "v1")
	if err != nil {
		t.Fatalf("GET of a tag the leader has, through a follower behind it: %v", err)
	}
	if m.Digest != d {
		t.Errorf("the follower served %s, want %s", m.Digest, d)
	}

	start := time.Now()
	_, err = follower.GetManifest(t.Context(), "r/app", "nope")
	if !errors.Is(err, oci.ManifestUnknown) {
		t.Errorf("GET of a tag nobody wrote: %v, want MANIFEST_UNKNOWN", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the 404 took %v: catching up should cost one round trip to the leader", took)
	}
}

// TestManifestPutCatchesUpOnItsBlobs: blobs pushed through the leader a
// moment ago, not yet applied on a follower, do not make a manifest PUT
// through the follower fail with MANIFEST_BLOB_UNKNOWN.
func TestManifestPutCatchesUpOnItsBlobs(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	leader := fn.add("a", nil)
	follower := fn.add("a", nil)
	follower.meta.(interface{ SetLag(time.Duration) }).SetLag(300 * time.Millisecond)
	var blobs []digest.Digest
	_, err := pushImageThrough(t, leader, follower, "r/app", 40, &blobs)
	if err != nil {
		t.Fatalf("manifest PUT through a follower behind the leader that took its blobs: %v", err)
	}
	if d, err := follower.meta.ResolveTag("r/app", "v1"); err != nil {
		t.Errorf("tag v1 after the PUT: %s, %v", d, err)
	}
}
