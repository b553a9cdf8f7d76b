package node

import (
	"bytes"
	"cmp"
	"encoding/json"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// holders lists the nodes of fn that hold d complete.
func holdersOf(fn *fakeNet, d digest.Digest) []int {
	var out []int
	for i, n := range fn.nodes {
		if n.blobs.Held(d) {
			out = append(out, i)
		}
	}
	return out
}

// sweep runs one repair sweep on n, as its repair loop does every
// --repair-interval.
func sweep(t *testing.T, n *Node) (under, repaired int) {
	t.Helper()
	under, repaired, err := n.replicas.Sweep(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return under, repaired
}

// pushImage pushes a config and a layer through n, then a manifest naming
// them, as tag v1 of repo; it returns the blobs' digests.
func pushImage(t *testing.T, n *Node, repo string, seed uint64) ([]digest.Digest, error) {
	t.Helper()
	var blobs []digest.Digest
	_, err := pushImageThrough(t, n, n, repo, seed, &blobs)
	return blobs, err
}

// pushImageThrough pushes the blobs of an image through blobsTo and its
// manifest (tag v1) through manifestTo, appending the blobs' digests to
// blobs.
func pushImageThrough(t *testing.T, blobsTo, manifestTo *Node, repo string, seed uint64, blobs *[]digest.Digest) (digest.Digest, error) {
	t.Helper()
	ctx := t.Context()
	var descs []ocispec.Descriptor
	for i := range 2 {
		b, d := randomBlob(seed+uint64(i), 256<<10)
		if _, err := blobsTo.PutBlob(ctx, repo, d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		*blobs = append(*blobs, d)
		descs = append(descs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(b))})
	}
	descs[0].MediaType = ocispec.MediaTypeImageConfig
	body, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: descs[0], Layers: descs[1:]})
	d, _, err := manifestTo.PutManifest(ctx, repo, "v1", ocispec.MediaTypeImageManifest, body, nil)
	return d, err
}

// TestPushAcknowledgedOnlyOnceReplicated: with --replicas 2, a manifest
// PUT returns once every blob it names is on two nodes, so the image is
// still served when the node it was pushed to is gone.
func TestPushAcknowledgedOnlyOnceReplicated(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	two := func(c *Config) { c.Replicas = 2 }
	pusher := fn.add("a", two)
	puller := fn.add("a", two)
	fn.add("b", two)
	blobs, err := pushImage(t, pusher, "r/app", 10)
	if err != nil {
		t.Fatalf("manifest PUT with 3 live nodes and --replicas 2: %v", err)
	}
	for _, d := range blobs {
		if got := holdersOf(fn, d); len(got) != 2 || got[0] != 0 {
			t.Errorf("blob %s is held by nodes %v when the PUT returns, want the pusher and one more", d, got)
		}
	}
	if err := pusher.host.Close(); err != nil { // the pusher is gone
		t.Fatal(err)
	}
	for _, d := range blobs {
		if got, err := pull(t.Context(), puller, "r/app", d); err != nil || digest.FromBytes(got) != d {
			t.Errorf("blob %s through another node once the pusher is gone: %d bytes, %v", d, len(got), err)
		}
	}
}

// TestRepairSweepRestoresReplicas: a blob with fewer copies than
// --replicas gets copies from its lowest-id holder (spreading over zones
// first); the other holders count it as under-replicated and leave it.
func TestRepairSweepRestoresReplicas(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	three := func(c *Config) { c.Replicas = 3 }
	for _, z := range []string{"a", "a", "a", "b"} {
		fn.add(z, three)
	}
	blob, d := randomBlob(20, 128<<10)
	// Two holders in zone a; the lowest-id one must do the copying.
	order := slices.Clone(fn.nodes[:2])
	slices.SortFunc(order, func(x, y *Node) int { return cmpID(x, y) })
	low, high := order[0], order[1]
	hold(t, low, "r/app", blob)
	hold(t, high, "r/app", blob)

	if under, repaired := sweep(t, high); under != 1 || repaired != 0 {
		t.Errorf("sweep on the higher-id holder: under %d, repaired %d; want 1, 0 (it leaves the copy to the lowest id)", under, repaired)
	}
	if got := holdersOf(fn, d); len(got) != 2 {
		t.Fatalf("after the higher-id holder's sweep the blob is on %v, want still 2 nodes", got)
	}
	if under, repaired := sweep(t, low); under != 0 || repaired != 1 {
		t.Errorf("sweep on the lowest-id holder: under %d, repaired %d; want 0, 1", under, repaired)
	}
	got := holdersOf(fn, d)
	if len(got) != 3 {
		t.Fatalf("after the repair the blob is on nodes %v, want 3", got)
	}
	if !slices.Contains(got, 3) {
		t.Errorf("the third copy went to %v, not to the node in the other zone (3)", got)
	}
	if under, repaired := sweep(t, low); under != 0 || repaired != 0 {
		t.Errorf("a second sweep: under %d, repaired %d; want nothing to do", under, repaired)
	}
}

func cmpID(x, y *Node) int { return cmp.Compare(x.host.ID(), y.host.ID()) }
