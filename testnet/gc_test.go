package testnet_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet"
)

// gcImage is an image pushed by hand: its blobs (config first) and the
// manifest that lists them.
type gcImage struct {
	repo     string
	blobs    [][]byte
	manifest []byte
	digest   digest.Digest
}

func newGCImage(repo string, cfg []byte, layers ...[]byte) *gcImage {
	img := &gcImage{repo: repo, blobs: append([][]byte{cfg}, layers...)}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}}
	for _, l := range layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: digest.FromBytes(l), Size: int64(len(l))})
	}
	img.manifest, _ = json.Marshal(m)
	img.digest = digest.FromBytes(img.manifest)
	return img
}

func (img *gcImage) pushBlobs(t *testing.T, c *testnet.Client) {
	t.Helper()
	for _, b := range img.blobs {
		if _, err := c.PushBytes(t.Context(), img.repo, b); err != nil {
			t.Fatalf("pushing a blob of %s: %v", img.repo, err)
		}
	}
}

func (img *gcImage) putManifest(c *testnet.Client) error {
	_, err := c.PutManifest(context.Background(), img.repo, "v1", ocispec.MediaTypeImageManifest, img.manifest)
	return err
}

// pullsInFull checks, through n, the manifest and every blob, bit for bit.
func (img *gcImage) pullsInFull(t *testing.T, n *testnet.Node) {
	t.Helper()
	c := testnet.NewClient(n.URL())
	body, _, _, err := c.GetManifest(t.Context(), img.repo, "v1")
	if err != nil || digest.FromBytes(body) != img.digest {
		t.Errorf("manifest of %s through %s: %v", img.repo, n.URL(), err)
	}
	for _, b := range img.blobs {
		if err := c.VerifyBlob(t.Context(), img.repo, digest.FromBytes(b), int64(len(b))); err != nil {
			t.Errorf("blob of %s through %s: %v", img.repo, n.URL(), err)
		}
	}
}

// holds reports whether n's disk holds a file of d.
func holds(n *testnet.Node, d digest.Digest) bool {
	_, err := os.Stat(filepath.Join(n.DataDir(), "blobs", string(d.Algorithm()), d.Encoded()[:2], d.Encoded()))
	return err == nil
}

// diskBytes is the size of the blob files on n's disk.
func diskBytes(t *testing.T, n *testnet.Node) int64 {
	var total int64
	_ = filepath.Walk(filepath.Join(n.DataDir(), "blobs"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			total += fi.Size()
		}
		return nil
	})
	return total
}

func deleteManifest(t *testing.T, n *testnet.Node, repo string, d digest.Digest) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, n.URL()+"/v2/"+repo+"/manifests/"+d.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("deleting %s@%s: %v %v", repo, d, err, resp)
	}
	resp.Body.Close()
}

// TestGCUnderLoad is CNCF Distribution's #1609 on a 3-node cluster
// (replicas 2): images A and B share a layer; A is deleted while a push of
// C, which reuses A's unique layer, is in flight through another node (its
// blobs are pushed, its manifest PUT is held until `meshreg gc --grace 0s`
// has committed). The PUT then fails with a clear MANIFEST_BLOB_UNKNOWN (the
// layer was freed) and pushing C again succeeds; A's unique bytes are
// freed on every node that held them; B and C pull in full through every
// node. A dry run before lists A's blobs and frees nothing. With a node
// down during the collection (killed before it), the collection goes on
// without its report, and the node frees its copies when it restarts and
// applies the log. The same with the node SIGKILLed while the collection
// runs (the kill lands somewhere between the mark and the last sweep; the
// invariants hold wherever it does).
func TestGCUnderLoad(t *testing.T) {
	testnet.RequireProcess(t)
	for _, tc := range []struct {
		name string
		kill gcKill
	}{
		{"all nodes up", killNone},
		{"a node down during the collection", killBefore},
		{"a node killed mid-collection", killDuring},
	} {
		t.Run(tc.name, func(t *testing.T) { gcUnderLoad(t, tc.kill) })
	}
}

// gcKill says when gcUnderLoad kills a follower that holds A's blobs.
type gcKill int

const (
	killNone   gcKill = iota
	killBefore        // before the collection starts
	killDuring        // while `meshreg gc` runs
)

func gcUnderLoad(t *testing.T, mode gcKill) {
	kill := mode != killNone
	nodes := testnet.StartCluster(t, 3, testnet.Options{Args: []string{"--replicas", "2"}})
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	meshreg := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: t.TempDir()}
	c0, c1 := testnet.NewClient(followers[0].URL()), testnet.NewClient(followers[1].URL())

	shared, uniqueA, uniqueB := testnet.RandomBytes(1<<20), testnet.RandomBytes(1<<20+1), testnet.RandomBytes(1<<20+2)
	a := newGCImage(testnet.UniqueRepo("e2e/gc-a"), []byte(`{"architecture":"amd64","os":"linux","a":1}`), shared, uniqueA)
	b := newGCImage(testnet.UniqueRepo("e2e/gc-b"), []byte(`{"architecture":"amd64","os":"linux","b":1}`), shared, uniqueB)
	cImg := newGCImage(testnet.UniqueRepo("e2e/gc-c"), []byte(`{"architecture":"amd64","os":"linux","c":1}`), uniqueA)
	for _, img := range []*gcImage{a, b} {
		img.pushBlobs(t, c0)
		if err := img.putManifest(c0); err != nil {
			t.Fatal(err)
		}
	}
	// C is in flight through the other follower: blobs pushed, manifest
	// not yet; meanwhile A is deleted.
	cImg.pushBlobs(t, c1)
	deleteManifest(t, followers[0], a.repo, a.digest)

	aOnly := []digest.Digest{digest.FromBytes(a.blobs[0]), digest.FromBytes(uniqueA)}
	held := map[*testnet.Node][]digest.Digest{}
	before := map[*testnet.Node]int64{}
	for _, n := range nodes {
		before[n] = diskBytes(t, n)
		for _, d := range aOnly {
			if holds(n, d) {
				held[n] = append(held[n], d)
			}
		}
	}
	var victim *testnet.Node
	if kill {
		// The follower that is not the coordinator and holds A's layer.
		for _, n := range followers {
			if len(held[n]) > 0 {
				victim = n
				break
			}
		}
		if victim == nil {
			t.Fatal("no follower holds A's blobs: replicas 2 should have put them on two nodes")
		}
		if mode == killBefore {
			victim.Kill()
		}
	}
	coordinator := followers[0]
	if kill {
		coordinator = leader
	}
	if !kill {
		// A dry run lists A's own blobs and frees nothing.
		dry := string(meshreg.Run("gc", "--node", coordinator.URL(), "--grace", "0s", "--dry-run"))
		for _, d := range aOnly {
			if !strings.Contains(dry, d.String()) {
				t.Errorf("the dry run does not list %s:\n%s", d, dry)
			}
		}
		if strings.Contains(dry, digest.FromBytes(shared).String()) {
			t.Errorf("the dry run lists the layer B still uses:\n%s", dry)
		}
		for n, ds := range held {
			for _, d := range ds {
				if !holds(n, d) {
					t.Errorf("the dry run freed %s on %s", d, n.URL())
				}
			}
		}
	}
	var out string
	if mode == killDuring {
		done := make(chan testnet.CmdResult, 1)
		go func() { done <- meshreg.Try("gc", "--node", coordinator.URL(), "--grace", "0s") }()
		time.Sleep(30 * time.Millisecond) // the command is on its way: catching up, marking, proposing
		victim.Kill()
		res := <-done
		if res.Err != nil {
			t.Fatalf("meshreg gc with a member killed during it: %v\nstdout:\n%s\nstderr:\n%s", res.Err, res.Stdout, res.Stderr)
		}
		out = string(res.Stdout)
	} else {
		out = string(meshreg.Run("gc", "--node", coordinator.URL(), "--grace", "0s"))
	}
	t.Logf("meshreg gc:\n%s", out)
	if !strings.Contains(out, "BLOBS FREED") || !strings.Contains(out, "blobs (") {
		t.Errorf("meshreg gc printed no per-node report:\n%s", out)
	}

	_, _, metrics, err := testnet.NewClient(coordinator.URL()).Get(t.Context(), "/metrics", nil)
	if err != nil || !strings.Contains(string(metrics), `meshreg_gc_runs_total{result="ok"} 1`) {
		t.Errorf("the coordinator's metrics do not count the collection (%v)", err)
	}

	// The held PUT of C now finds its layer gone: a clear error, never an
	// acknowledged manifest whose layer is missing.
	err = cImg.putManifest(c1)
	if err == nil {
		t.Fatal("C's manifest was accepted although the collection freed its layer and config")
	}
	if testnet.StatusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "MANIFEST_BLOB_UNKNOWN") {
		t.Fatalf("C's manifest PUT: %v; want 400 MANIFEST_BLOB_UNKNOWN", err)
	}

	// A's own bytes are gone from every live node that held them.
	for _, n := range nodes {
		if n == victim {
			continue
		}
		for _, d := range held[n] {
			if holds(n, d) {
				t.Errorf("%s still holds %s after the collection", n.URL(), d)
			}
		}
		if len(held[n]) > 0 && diskBytes(t, n) >= before[n] {
			t.Errorf("%s: %d bytes of blobs before, %d after: nothing freed", n.URL(), before[n], diskBytes(t, n))
		}
	}
	if victim != nil {
		victim.Restart()
		ok := testnet.Eventually(30*time.Second, func() bool {
			for _, d := range held[victim] {
				if holds(victim, d) {
					return false
				}
			}
			return true
		})
		if !ok {
			t.Errorf("the restarted node still holds A's blobs: it did not sweep when it applied the collection")
		}
	}

	// The client pushes C again (blobs, then manifest): accepted.
	cImg.pushBlobs(t, c1)
	if err := cImg.putManifest(c1); err != nil {
		t.Fatalf("pushing C again after the collection: %v", err)
	}
	for _, n := range nodes {
		b.pullsInFull(t, n)
		cImg.pullsInFull(t, n)
		if _, _, _, err := testnet.NewClient(n.URL()).GetManifest(t.Context(), a.repo, a.digest.String()); testnet.StatusOf(err) != http.StatusNotFound {
			t.Errorf("deleted A through %s: %v; want 404", n.URL(), err)
		}
	}
}

// TestGCRacingAManifestPut holds a manifest PUT between its blob check and
// its commit (an in-process node with a hook) and runs a collection there
// that frees the layer the manifest references: the PUT must fail with
// MANIFEST_BLOB_UNKNOWN saying the blob was garbage-collected while the
// push was in flight — never be acknowledged with its layer gone, as in
// CNCF Distribution's issue #1609 — and the push done again succeeds.
func TestGCRacingAManifestPut(t *testing.T) {
	var hold func()
	nodes := testnet.StartInProcessClusterWith(t, 3, func(i int, c *node.Config) { c.Replicas = 2 }, func(i int) []node.Option {
		if i != 1 {
			return nil
		}
		return []node.Option{node.WithBeforeManifestCommit(func(string, digest.Digest) {
			if hold != nil {
				hold()
			}
		})}
	})
	c0, c1 := testnet.NewClient(nodes[0].URL()), testnet.NewClient(nodes[1].URL())
	layer := testnet.RandomBytes(256 << 10)
	a := newGCImage(testnet.UniqueRepo("e2e/race-a"), []byte(`{"architecture":"amd64","os":"linux","a":1}`), layer)
	cImg := newGCImage(testnet.UniqueRepo("e2e/race-c"), []byte(`{"architecture":"amd64","os":"linux","c":1}`), layer)
	a.pushBlobs(t, c0)
	if err := a.putManifest(c0); err != nil {
		t.Fatal(err)
	}
	cImg.pushBlobs(t, c1)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, nodes[0].URL()+"/v2/"+a.repo+"/manifests/"+a.digest.String(), nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("deleting A: %v %v", err, resp)
	}
	// C's blobs are linked and its manifest checked them; before it is
	// committed, a collection with no grace frees them.
	var res api.GCResult
	var gcErr error
	hold = func() {
		hold = nil
		res, gcErr = nodes[2].N.CollectGarbage(t.Context(), api.GCRequest{Grace: 0}, nil)
	}
	err := cImg.putManifest(c1)
	if gcErr != nil || res.Blobs == 0 {
		t.Fatalf("the collection during the PUT: %+v, %v; want the layer freed", res, gcErr)
	}
	if err == nil {
		t.Fatal("the manifest was acknowledged although the collection freed its layer while it was in flight")
	}
	if testnet.StatusOf(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "MANIFEST_BLOB_UNKNOWN") ||
		!strings.Contains(err.Error(), "garbage-collected while this push was in flight") {
		t.Fatalf("PUT during the collection: %v; want 400 MANIFEST_BLOB_UNKNOWN naming the collection", err)
	}
	cImg.pushBlobs(t, c1)
	if err := cImg.putManifest(c1); err != nil {
		t.Fatalf("pushing C again: %v", err)
	}
	for _, n := range nodes {
		cImg.pullsInFull(t, n.Node)
	}
}

// TestGCReportsFollowers: followers of the metadata are no Raft members,
// so the leader does not know them, yet they sweep their disks like
// members. `meshreg gc` lists each of them (asked through the member it
// tails from) with what it freed: here the only copy of an image pushed
// through a follower (--replicas 1), freed on its disk.
func TestGCReportsFollowers(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := startBounded(t, 4, []string{"--voters", "3", "--max-raft-members", "0", "--replicas", "1"}, nil)
	sts := waitRoles(t, nodes, roleCounts{3, 0, 1}, 60*time.Second)
	follower := withRole(sts, nodes, "follower")[0]
	member := withRole(sts, nodes, "voter")[0]
	img := newGCImage(testnet.UniqueRepo("e2e/gc-follower"), []byte(`{"architecture":"amd64","os":"linux","f":1}`),
		testnet.RandomBytes(64<<10), testnet.RandomBytes(64<<10))
	c := testnet.NewClient(follower.URL())
	img.pushBlobs(t, c)
	if err := img.putManifest(c); err != nil {
		t.Fatalf("pushing through follower %s: %v", follower.Host(), err)
	}
	for _, b := range img.blobs {
		if !holds(follower, digest.FromBytes(b)) {
			t.Fatalf("premise: follower %s does not hold %s after the push through it", follower.Host(), digest.FromBytes(b))
		}
	}
	deleteManifest(t, follower, img.repo, img.digest)

	meshreg := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: t.TempDir()}
	out := string(meshreg.Run("gc", "--node", member.URL(), "--grace", "0s"))
	t.Logf("meshreg gc:\n%s", out)
	id := sts[follower].NodeID
	var row []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == id {
			row = f
		}
	}
	if row == nil || row[1] != "follower" {
		t.Fatalf("meshreg gc has no row for follower %s (want its role and what it freed):\n%s", id, out)
	}
	if freed, err := strconv.Atoi(row[2]); err != nil || freed < len(img.blobs) {
		t.Errorf("follower %s freed %q blobs, want at least %d (the image's config and layers)", id, row[2], len(img.blobs))
	}
	for _, b := range img.blobs {
		d := digest.FromBytes(b)
		if !testnet.Eventually(10*time.Second, func() bool { return !holds(follower, d) }) {
			t.Errorf("follower %s still holds %s after the collection", follower.Host(), d)
		}
	}
}
