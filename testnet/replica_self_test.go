package testnet_test

import (
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// TestManifestThroughANodeWithoutItsBlobs: in a two-node cluster (what a
// three-node one is while a removed member rejoins), a manifest pushed
// through the node that does not hold its blob is stored: that node makes
// the second copy itself, since no other live node lacks the blob.
func TestManifestThroughANodeWithoutItsBlobs(t *testing.T) {
	nodes := testnet.StartInProcessCluster(t, 2, nil)
	const repo = "replicas/self"
	manifest := smallImage(t, testnet.NewClient(nodes[0].URL()), repo) // the config blob is on nodes[0] only
	c := testnet.NewClient(nodes[1].URL())
	d, err := c.PutManifest(t.Context(), repo, "v1", ocispec.MediaTypeImageManifest, manifest("1"))
	if err != nil {
		t.Fatalf("manifest through the node without its blob: %v", err)
	}
	if got := tagOn(t.Context(), nodes[0].Node, repo, "v1"); got != d.String() {
		t.Errorf("the other node serves v1 as %q, want %s", got, d)
	}
	if st := statusOf(t, nodes[1]); st.Blobs.Count == 0 {
		t.Errorf("the node the manifest went through holds no blob: no second copy was made")
	}
}
