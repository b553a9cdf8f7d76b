package testnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/node"
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
	testnet.RequireProcess(t)
	t.Parallel()
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	r := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: t.TempDir()}
	repo := testnet.UniqueRepo("e2e/peers")
	want, m := craneImage(t, r, nodes[0].Host()+"/"+repo+":v1", 4, 4, 4<<20)

	for _, n := range nodes[1:] {
		cranePull(t, r, n.Host()+"/"+repo+":v1", want, m)
	}
	// With --replicas 2 each blob was copied to node 2 or node 3 during
	// the push (read locally at pull time); the other node fetched it from
	// a peer when crane asked for it. Either way both hold the whole image
	// now, and every byte of it reached them from peers.
	blobs := float64(len(m.Layers) + 1)
	peerReads := 0.0
	for i, n := range nodes[1:] {
		fetched := metric(t, n, "meshreg_peer_bytes_fetched_total")
		local := metric(t, n, "meshreg_blob_reads_total", `source="local"`)
		fromPeers := metric(t, n, "meshreg_blob_reads_total", `source="peer"`)
		t.Logf("node %d: %.0f bytes fetched from peers; blob reads: %.0f from peers, %.0f local", i+2, fetched, fromPeers, local)
		if fetched < 64<<20 {
			t.Errorf("node %d fetched %.0f bytes from peers, want the 64 MiB image", i+2, fetched)
		}
		if local+fromPeers < blobs {
			t.Errorf("node %d counted %.0f blob reads, want at least the image's %.0f", i+2, local+fromPeers, blobs)
		}
		peerReads += fromPeers
	}
	if peerReads < blobs {
		t.Errorf("nodes 2 and 3 served %.0f blob reads from peers together, want at least %.0f (each blob has a copy on one of them only)", peerReads, blobs)
	}
	if served := metric(t, nodes[0], "meshreg_peer_bytes_served_total"); served < 64<<20 {
		t.Errorf("node 1 served %.0f bytes to peers, want at least the 64 MiB image once", served)
	}
}

// TestPeersKeepAnImageWhenItsPusherDies: the push is acknowledged only
// once a second node holds every blob, so killing the node it was pushed
// to right after the push leaves the image whole on the others.
func TestPeersKeepAnImageWhenItsPusherDies(t *testing.T) {
	testnet.RequireProcess(t)
	t.Parallel()
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	r := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: t.TempDir()}
	repo := testnet.UniqueRepo("e2e/pusher-dies")
	want, m := craneImage(t, r, nodes[0].Host()+"/"+repo+":v1", 3, 2, 2<<20)
	nodes[0].Kill()
	for _, n := range nodes[1:] {
		// The tag is committed; a follower that had not applied it when
		// the leader died applies it once the survivors elect a leader.
		if !testnet.Eventually(30*time.Second, func() bool { return tagOn(t.Context(), n, repo, "v1") == want.String() }) {
			t.Fatalf("tag v1 never appeared on %s after the pusher died", n.Host())
		}
		cranePull(t, r, n.Host()+"/"+repo+":v1", want, m)
	}
}

// randomBlob is n reproducible random bytes and their digest.
func randomBlob(seed uint64, n int64) ([]byte, digest.Digest) {
	b, err := io.ReadAll(testnet.NewStream(seed, n))
	if err != nil {
		panic(err)
	}
	return b, digest.FromBytes(b)
}

// getBlob reads blob d of repo through n: the bytes received and the error
// that ended the body, if any.
func getBlob(ctx context.Context, n *testnet.Node, repo string, d digest.Digest) ([]byte, error) {
	body, _, err := testnet.NewClient(n.URL()).GetBlob(ctx, repo, d)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(body)
}

// waitLinked waits until n's metadata has blob d in repo.
func waitLinked(t *testing.T, n *testnet.Node, repo string, d digest.Digest) {
	t.Helper()
	c := testnet.NewClient(n.URL())
	if !testnet.Eventually(10*time.Second, func() bool {
		code, _, err := c.HeadBlob(t.Context(), repo, d)
		return err == nil && code == http.StatusOK
	}) {
		t.Fatalf("blob %s never became visible on %s", d, n.Host())
	}
}

// badNearestHolder starts three in-process nodes, origin (zone a), bad
// (zone b, serving peers through fault) and puller (zone b), with
// --replicas 1; pushes a random blob to origin; lets bad take an honest
// copy; and waits until puller can see the blob and knows both holders'
// zones, so that bad is the nearest holder puller will try first.
// peerIdle, if not 0, is every node's --peer-idle-timeout.
func badNearestHolder(t *testing.T, fault func(digest.Digest, io.Reader) io.Reader, peerIdle time.Duration, seed uint64, size int64) (origin, bad, puller *testnet.InProcessNode, repo string, blob []byte, d digest.Digest) {
	t.Helper()
	zones := []string{"a", "b", "b"}
	nodes := testnet.StartInProcessClusterWith(t, 3, func(i int, c *node.Config) {
		c.Zone = zones[i]
		c.Replicas = 1
		if peerIdle != 0 {
			c.PeerIdleTimeout = peerIdle
		}
	}, func(i int) []node.Option {
		if i == 1 {
			return []node.Option{node.WithServeFault(fault)}
		}
		return nil
	})
	origin, bad, puller = nodes[0], nodes[1], nodes[2]
	repo = testnet.UniqueRepo("e2e/bad-holder")
	blob, d = randomBlob(seed, size)
	if _, err := testnet.NewClient(origin.URL()).PushBytes(t.Context(), repo, blob); err != nil {
		t.Fatal(err)
	}
	waitLinked(t, bad.Node, repo, d)
	if got, err := getBlob(t.Context(), bad.Node, repo, d); err != nil || digest.FromBytes(got) != d {
		t.Fatalf("pull through the bad holder (from the origin, honest): %d bytes, %v", len(got), err)
	}
	waitHolds(t, bad.Node, 1)
	waitLinked(t, puller.Node, repo, d)
	waitKnows(t, puller, origin, bad)
	return origin, bad, puller, repo, blob, d
}

// waitHolds waits until n has committed blobs blobs to its disk (a
// client's pull ends when the bytes are verified, a moment before the
// node's copy is durable and in place).
func waitHolds(t *testing.T, n *testnet.Node, blobs int64) {
	t.Helper()
	if !testnet.Eventually(10*time.Second, func() bool {
		st, err := n.Status(t.Context())
		return err == nil && st.Blobs.Count >= blobs
	}) {
		t.Fatalf("%s never held %d blobs", n.Host(), blobs)
	}
}

// waitKnows waits until n has learned the zone of every node in peers.
func waitKnows(t *testing.T, n *testnet.InProcessNode, peers ...*testnet.InProcessNode) {
	t.Helper()
	if !testnet.Eventually(15*time.Second, func() bool {
		st, err := n.Status(t.Context())
		if err != nil {
			return false
		}
		for _, p := range peers {
			if !st.KnowsZone(p.PeerID().String(), p.N.Status(t.Context()).(node.Status).Zone) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("%s never learned the zones of its peers", n.Host())
	}
}

// TestPeersCorruptProviderIsPenalised: the nearest provider of a blob
// sends wrong bytes. The client is never handed a complete wrong blob, the
// node gets the right bytes from another provider, and it penalises the
// liar.
func TestPeersCorruptProviderIsPenalised(t *testing.T) {
	t.Parallel()
	origin, liar, puller, repo, blob, d := badNearestHolder(t, testnet.CorruptPeer, 0, 41, 8<<20)

	// The puller asks the liar first: same zone.
	got, err := getBlob(t.Context(), puller.Node, repo, d)
	if err == nil && len(got) == len(blob) && digest.FromBytes(got) != d {
		t.Fatalf("the client received a complete blob of %d bytes that does not match %s", len(got), d)
	}
	t.Logf("first pull through the puller: %d of %d bytes, err %v", len(got), len(blob), err)
	// A client retries a cut-short download, as docker and containerd do.
	if !testnet.Eventually(30*time.Second, func() bool {
		got, err = getBlob(t.Context(), puller.Node, repo, d)
		return err == nil && digest.FromBytes(got) == d
	}) {
		t.Fatalf("the puller never served the right bytes: %d bytes, %v", len(got), err)
	}
	if served := metric(t, liar.Node, "meshreg_peer_bytes_served_total"); served == 0 {
		t.Errorf("the liar served nothing: it was not tried first")
	}
	if p := metric(t, puller.Node, "meshreg_peer_penalties_total"); p < 1 {
		t.Errorf("meshreg_peer_penalties_total on the puller = %v, want at least 1", p)
	}
	st, err := puller.Status(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Penalised(liar.PeerID().String()) {
		t.Errorf("the puller's status does not show the liar %s as penalised: %+v", liar.PeerID(), st.Peers)
	}
	if st.Penalised(origin.PeerID().String()) {
		t.Errorf("the puller penalised the honest origin too")
	}
}

// TestPeersFetchFromTheirOwnZone: with the blob in both zones, a node
// fetches it from the holder in its own zone.
func TestPeersFetchFromTheirOwnZone(t *testing.T) {
	t.Parallel()
	zones := []string{"a", "a", "b", "b", "b"}
	nodes := testnet.StartInProcessCluster(t, 5, func(i int, c *node.Config) {
		c.Zone = zones[i]
		c.Replicas = 1
	})
	repo := testnet.UniqueRepo("e2e/zones")
	blob, d := randomBlob(42, 4<<20)
	size := float64(len(blob))
	if _, err := testnet.NewClient(nodes[0].URL()).PushBytes(t.Context(), repo, blob); err != nil {
		t.Fatal(err)
	}
	pull := func(n *testnet.InProcessNode) {
		t.Helper()
		waitLinked(t, n.Node, repo, d)
		if got, err := getBlob(t.Context(), n.Node, repo, d); err != nil || digest.FromBytes(got) != d {
			t.Fatalf("pull through %s: %d bytes, %v", n.Host(), len(got), err)
		}
	}
	served := func(n *testnet.InProcessNode) float64 { return metric(t, n.Node, "meshreg_peer_bytes_served_total") }

	// Zone b's first copy has to cross from zone a.
	pull(nodes[2])
	waitKnows(t, nodes[3], nodes[0], nodes[2])
	waitKnows(t, nodes[1], nodes[0], nodes[2])
	a0, b2 := served(nodes[0]), served(nodes[2])
	// The next pull in zone b comes from zone b.
	pull(nodes[3])
	if got := served(nodes[2]) - b2; got != size {
		t.Errorf("zone b's holder served %.0f bytes for the second pull in zone b, want the blob's %.0f", got, size)
	}
	if got := served(nodes[0]) - a0; got != 0 {
		t.Errorf("zone a's holder served %.0f bytes for a pull in zone b that zone b could serve", got)
	}
	// And a pull in zone a comes from zone a.
	a0, b2 = served(nodes[0]), served(nodes[2])
	pull(nodes[1])
	if got := served(nodes[0]) - a0; got != size {
		t.Errorf("zone a's holder served %.0f bytes for a pull in zone a, want %.0f", got, size)
	}
	if got := served(nodes[2]) - b2; got != 0 {
		t.Errorf("zone b's holder served %.0f bytes for a pull in zone a", got)
	}
}

// TestPeersRepairCopiesAfterANodeLeaves: with --replicas 2, a node that
// holds one of two copies dies for good; the survivors copy its blobs
// again and report nothing under-replicated.
func TestPeersRepairCopiesAfterANodeLeaves(t *testing.T) {
	testnet.RequireProcess(t)
	t.Parallel()
	nodes := testnet.StartCluster(t, 3, testnet.Options{Args: []string{"--repair-interval", "500ms", "--dead-server-timeout", "5s"}})
	c := testnet.NewClient(nodes[0].URL())
	repo := testnet.UniqueRepo("e2e/repair")
	manifest := smallImage(t, c, repo)
	if _, err := c.PutManifest(t.Context(), repo, "v1", ocispec.MediaTypeImageManifest, manifest("v1")); err != nil {
		t.Fatal(err)
	}
	count := func(n *testnet.Node) (blobs, under int64) {
		st, err := n.Status(t.Context())
		if err != nil {
			return -1, -1
		}
		return st.Blobs.Count, st.Blobs.UnderReplicated
	}
	// The push made one copy of the config blob on node 2 or 3.
	var copyHolder, other *testnet.Node
	for i, n := range nodes[1:] {
		if b, _ := count(n); b == 1 {
			copyHolder, other = n, nodes[1+(1-i)]
		}
	}
	if copyHolder == nil {
		t.Fatal("after the push no other node holds a copy of the blob")
	}
	copyHolder.Kill()
	if !testnet.Eventually(60*time.Second, func() bool {
		b, _ := count(other)
		_, under0 := count(nodes[0])
		_, under := count(other)
		return b == 1 && under0 == 0 && under == 0
	}) {
		b, under := count(other)
		_, under0 := count(nodes[0])
		t.Fatalf("after the copy holder died: the third node holds %d blobs (want 1); under-replicated: %d on node 1, %d on the third (want 0)", b, under0, under)
	}
	if n := metric(t, nodes[0], "meshreg_blob_copies_made_total"); n < 2 {
		t.Errorf("node 1 made %v copies, want 2 (one at push, one in repair)", n)
	}
}

// TestPeersAbandonAStalledHolder: the nearest holder stops sending mid
// blob; after --peer-idle-timeout the node resumes from another holder and
// the client still gets the right bytes.
func TestPeersAbandonAStalledHolder(t *testing.T) {
	t.Parallel()
	// 1 MiB/s after a 5 s pause: stalled for the fetcher.
	origin, _, puller, repo, blob, d := badNearestHolder(t, testnet.SlowPeer(1<<20, 5*time.Second), time.Second, 44, 4<<20)

	start := time.Now()
	got, err := getBlob(t.Context(), puller.Node, repo, d)
	took := time.Since(start)
	if err != nil || digest.FromBytes(got) != d {
		t.Fatalf("pull through the puller: %d bytes, %v", len(got), err)
	}
	t.Logf("pulled %d bytes in %v past a stalled nearest holder", len(got), took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("the pull took %v: it waited for the stalled holder instead of moving on after 1 s", took)
	}
	if served := metric(t, origin.Node, "meshreg_peer_bytes_served_total"); served < float64(len(blob)) {
		t.Errorf("the origin served %.0f bytes, want the blob (%d) for the stalled node and the rest for the puller", served, len(blob))
	}
}

// TestPeersShareOneFetch: several clients ask one node at once for a blob
// it does not hold, one of them for a byte range. The node fetches the blob
// from its holder once, every client gets its bytes while the fetch is
// still running, and the range is served from the part already written.
func TestPeersShareOneFetch(t *testing.T) {
	t.Parallel()
	nodes := testnet.StartInProcessClusterWith(t, 2, func(i int, c *node.Config) {
		c.Replicas = 1
	}, func(i int) []node.Option {
		if i == 0 {
			return []node.Option{node.WithServeFault(testnet.SlowPeer(16<<20, 0))} // a fetch of 32 MiB takes 2 s
		}
		return nil
	})
	origin, puller := nodes[0], nodes[1]
	repo := testnet.UniqueRepo("e2e/share")
	blob, d := randomBlob(45, 32<<20)
	if _, err := testnet.NewClient(origin.URL()).PushBytes(t.Context(), repo, blob); err != nil {
		t.Fatal(err)
	}
	waitLinked(t, puller.Node, repo, d)

	const clients = 4
	errs := make(chan error, clients+1)
	for range clients {
		go func() {
			got, err := getBlob(t.Context(), puller.Node, repo, d)
			if err == nil && digest.FromBytes(got) != d {
				err = fmt.Errorf("got %d bytes hashing to %s", len(got), digest.FromBytes(got))
			}
			errs <- err
		}()
	}
	go func() {
		from, to := 20<<20, 20<<20+999
		code, _, got, err := testnet.NewClient(puller.URL()).Get(t.Context(), "/v2/"+repo+"/blobs/"+d.String(),
			http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", from, to)}})
		switch {
		case err != nil:
		case code != http.StatusPartialContent:
			err = fmt.Errorf("range GET answered %d", code)
		case string(got) != string(blob[from:to+1]):
			err = fmt.Errorf("range GET returned %d bytes that differ from the blob's", len(got))
		}
		errs <- err
	}()
	for range clients + 1 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := metric(t, puller.Node, "meshreg_peer_bytes_fetched_total"); got != float64(len(blob)) {
		t.Errorf("the node fetched %.0f bytes for %d concurrent clients, want the blob once (%d)", got, clients+1, len(blob))
	}
	if got := metric(t, puller.Node, "meshreg_blob_reads_total", `source="peer"`); got != clients+1 {
		t.Errorf("reads from peers = %.0f, want %d", got, clients+1)
	}
}

// TestPeersNewContentIsFoundThroughAnyNodeAtOnce: a blob or a tag written
// through one node is found through another the moment the write returns
// (a miss makes a follower catch up with the leader before answering), so
// `push to node 1; pull through node 3` needs no pause in between.
func TestPeersNewContentIsFoundThroughAnyNodeAtOnce(t *testing.T) {
	testnet.RequireProcess(t)
	t.Parallel()
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	repo := testnet.UniqueRepo("e2e/at-once")
	ctx := t.Context()
	for i := range 15 {
		writer, reader := nodes[i%3], nodes[(i+1)%3]
		blob, d := randomBlob(uint64(100+i), 64<<10)
		if _, err := testnet.NewClient(writer.URL()).PushBytes(ctx, repo, blob); err != nil {
			t.Fatal(err)
		}
		if got, err := getBlob(ctx, reader, repo, d); err != nil || digest.FromBytes(got) != d {
			t.Fatalf("write %d: blob pushed through %s, GET through %s at once: %d bytes, %v", i, writer.Host(), reader.Host(), len(got), err)
		}
		cfg := fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"n":%d}`, i)
		cd, err := testnet.NewClient(writer.URL()).PushBytes(ctx, repo, []byte(cfg))
		if err != nil {
			t.Fatal(err)
		}
		m, _ := json.Marshal(ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfg))},
			Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: d, Size: int64(len(blob))}},
		})
		tag := fmt.Sprintf("v%d", i)
		md, err := testnet.NewClient(writer.URL()).PutManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, m)
		if err != nil {
			t.Fatal(err)
		}
		if got := tagOn(ctx, reader, repo, tag); got != md.String() {
			t.Fatalf("write %d: tag %s written through %s, read through %s at once: %q, want %s", i, tag, writer.Host(), reader.Host(), got, md)
		}
	}
}
