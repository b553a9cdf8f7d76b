package testnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// craneImage pushes an image of layers random layers (files × fileSize
// bytes each) to ref with crane, and returns its digest and manifest.
func craneImage(t *testing.T, r testnet.Runner, ref string, layers, files, fileSize int) (digest.Digest, ocispec.Manifest) {
	t.Helper()
	args := []string{"append", "--insecure", "--oci-empty-base", "-t", ref}
	for i := range layers {
		path := filepath.Join(r.Dir, fmt.Sprintf("layer%d.tar", i))
		if _, err := testnet.WriteLayerTar(path, fmt.Sprintf("layer%d", i), files, fileSize); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", path)
	}
	out := strings.TrimSpace(string(r.Run(args...)))
	_, pushed, ok := strings.Cut(out, "@")
	if !ok {
		t.Fatalf("crane append printed %q, want REF@DIGEST", out)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(r.Run("manifest", "--insecure", ref), &m); err != nil {
		t.Fatal(err)
	}
	return digest.Digest(pushed), m
}

// cranePull pulls ref into a fresh OCI layout and checks every blob.
func cranePull(t *testing.T, r testnet.Runner, ref string, want digest.Digest, m ocispec.Manifest) {
	t.Helper()
	layout := filepath.Join(t.TempDir(), "pulled")
	r.Run("pull", "--insecure", "--format", "oci", ref, layout)
	checkLayout(t, layout, want, m)
}

func metric(t *testing.T, n *testnet.Node, name string, match ...string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := n.Metric(ctx, name, match...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestPeersServeAnImagePushedToAnotherNode is the promise of the P2P
// layer: push a 64 MiB image to node 1, pull it through nodes 2 and 3 with
// crane, bit for bit, and see in node 3's metrics that its bytes came
// from peers.
func TestPeersServeAnImagePushedToAnotherNode(t *testing.T) {
	t.Parallel()
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	r := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: t.TempDir()}
	repo := testnet.UniqueRepo("e2e/peers")
	want, m := craneImage(t, r, nodes[0].Host()+"/"+repo+":v1", 4, 4, 4<<20)

	for _, n := range nodes[1:] {
		cranePull(t, r, n.Host()+"/"+repo+":v1", want, m)
	}
	fetched := metric(t, nodes[2], "meshreg_peer_bytes_fetched_total")
	local := metric(t, nodes[2], "meshreg_blob_reads_total", `source="local"`)
	peerReads := metric(t, nodes[2], "meshreg_blob_reads_total", `source="peer"`)
	t.Logf("node 3: %.0f bytes fetched from peers, %.0f blob reads from peers, %.0f local", fetched, peerReads, local)
	// With --replicas 2 one of nodes 2 and 3 got a copy at push time and
	// serves it locally; node 3 either fetched, or holds the replica.
	served := metric(t, nodes[0], "meshreg_peer_bytes_served_total")
	if served < 64<<20 {
		t.Errorf("node 1 served %.0f bytes to peers, want at least the 64 MiB image once", served)
	}
	if fetched == 0 && local == 0 {
		t.Errorf("node 3 served the image but counted no blob read, local or from peers")
	}
	if fetched > 0 && peerReads == 0 {
		t.Errorf("node 3 fetched %.0f bytes but counted no blob read from peers", fetched)
	}
	total := 0.0
	for _, n := range nodes[1:] {
		total += metric(t, n, "meshreg_peer_bytes_fetched_total")
	}
	if total < 2*64<<20 {
		t.Errorf("nodes 2 and 3 fetched %.0f bytes from peers together, want the image on each (at least %d)", total, 2*64<<20)
	}
}

// TestPeersKeepAnImageWhenItsPusherDies: the push is acknowledged only
// once a second node holds every blob, so killing the node it was pushed
// to right after the push leaves the image whole on the others.
func TestPeersKeepAnImageWhenItsPusherDies(t *testing.T) {
	t.Parallel()
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	r := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: t.TempDir()}
	repo := testnet.UniqueRepo("e2e/pusher-dies")
	want, m := craneImage(t, r, nodes[0].Host()+"/"+repo+":v1", 3, 2, 2<<20)
	nodes[0].Kill()
	for _, n := range nodes[1:] {
		cranePull(t, r, n.Host()+"/"+repo+":v1", want, m)
	}
}
