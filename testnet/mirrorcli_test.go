package testnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/testnet"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// pushPlatformImage pushes with crane an image of layers random layers for
// platform p (os/arch) as ref and returns its manifest.
func pushPlatformImage(t *testing.T, r testnet.Runner, work, ref, p string, layers int) ocispec.Manifest {
	t.Helper()
	tmp := ref + "-tmp"
	args := []string{"append", "--insecure", "--oci-empty-base", "-t", tmp}
	for i := range layers {
		path := filepath.Join(work, fmt.Sprintf("%s-%d.tar", strings.ReplaceAll(p, "/", "-"), i))
		if _, err := testnet.WriteLayerTar(path, fmt.Sprintf("%s-layer%d", strings.ReplaceAll(p, "/", "-"), i), 2, 128<<10); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-f", path)
	}
	r.Run(args...)
	r.Run("mutate", "--insecure", "--set-platform", p, tmp, "-t", ref)
	var m ocispec.Manifest
	if err := json.Unmarshal(r.Run("manifest", "--insecure", ref), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPreloadOnePlatformIntoANode: a two-platform index pushed with crane
// to node 1 of a two-node cluster (one replica, so node 2 holds none of
// it); `meshreg preload --platform linux/arm64` through node 2 leaves node
// 2 holding exactly the arm64 image's config and layers, and prints a line
// per blob and a summary.
func TestPreloadOnePlatformIntoANode(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 2, testnet.Options{Args: []string{"--replicas", "1"}})
	n1, n2 := nodes[0], nodes[1]
	crane := testnet.Tool(t, "crane")
	work := t.TempDir()
	r := testnet.Runner{T: t, Path: crane, Dir: work}
	repo := testnet.UniqueRepo("e2e/preload")

	amd := pushPlatformImage(t, r, work, n1.Host()+"/"+repo+":amd64", "linux/amd64", 2)
	arm := pushPlatformImage(t, r, work, n1.Host()+"/"+repo+":arm64", "linux/arm64", 3)
	r.Run("index", "append", "--insecure", "-m", n1.Host()+"/"+repo+":amd64", "-m", n1.Host()+"/"+repo+":arm64", "-t", n1.Host()+"/"+repo+":v1")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	before, err := n2.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if before.Blobs.Count != 0 {
		t.Fatalf("node 2 holds %d blobs before the preload, want 0 (one replica, pushed to node 1)", before.Blobs.Count)
	}

	// The image by node 2's own name: content pushed to the cluster, no ?ns.
	image := n2.Host() + "/" + repo + ":v1"
	res := testnet.Cmd{Path: testnet.Binary(t), Args: []string{"preload", "--node", n2.URL(), "--platform", "linux/arm64", image}, Timeout: time.Minute}.Run(ctx)
	t.Logf("meshreg preload:\n%s%s", res.Stdout, res.Stderr)
	if res.Err != nil {
		t.Fatalf("meshreg preload: %v", res.Err)
	}

	want := append([]ocispec.Descriptor{arm.Config}, arm.Layers...)
	var wantBytes int64
	for _, d := range want {
		wantBytes += d.Size
		if !strings.Contains(string(res.Stderr), image+": blob "+d.Digest.String()) {
			t.Errorf("no progress line for blob %s", d.Digest)
		}
	}
	for _, d := range append([]ocispec.Descriptor{amd.Config}, amd.Layers...) {
		if strings.Contains(string(res.Stderr), d.Digest.String()) {
			t.Errorf("blob %s of linux/amd64 was read", d.Digest)
		}
	}
	if s := fmt.Sprintf("preloaded 1 of 1 images through 1 node(s): %d blobs", len(want)); !strings.Contains(string(res.Stderr), s) {
		t.Errorf("no summary %q", s)
	}
	// Node 2 keeps what it served: exactly the arm64 config and layers.
	var after testnet.NodeStatus
	if !testnet.Eventually(10*time.Second, func() bool {
		after, err = n2.Status(ctx)
		return err == nil && after.Blobs.Count == int64(len(want)) && after.Blobs.Bytes == wantBytes
	}) {
		t.Errorf("node 2 holds %d blobs, %d bytes after the preload, want the %d blobs, %d bytes of linux/arm64 (%v)",
			after.Blobs.Count, after.Blobs.Bytes, len(want), wantBytes, err)
	}
	for _, d := range want {
		if _, err := os.Stat(blobPath(n2.DataDir(), d.Digest)); err != nil {
			t.Errorf("blob %s is not in node 2's data dir: %v", d.Digest, err)
		}
	}
}

// blobPath finds a blob's file in a data dir by its hex digest (the
// layout is the blobstore's; only the file name is relied on here).
func blobPath(dataDir string, d digest.Digest) string {
	var found string
	filepath.WalkDir(dataDir, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && e.Name() == d.Encoded() {
			found = path
			return filepath.SkipAll
		}
		return nil
	})
	if found == "" {
		return filepath.Join(dataDir, "(no file named "+d.Encoded()+")")
	}
	return found
}

// TestContainerdPullsThroughHostsToml: the machine's containerd pulls an
// image that crane pushed to a node, with a hosts dir that `meshreg mirror
// containerd` wrote: under the node's own name (server = the node), and
// under another registry name whose server is dead, so that the only way
// is the node as its mirror host (containerd sends ?ns=). Both unpack,
// their digests are crane's, and the node counted the pulls.
func TestContainerdPullsThroughHostsToml(t *testing.T) {
	testnet.RequireProcess(t)
	ctrd := testnet.UseContainerd(t)
	n := testnet.StartNode(t, testnet.Options{})
	crane := testnet.Tool(t, "crane")
	work := t.TempDir()
	r := testnet.Runner{T: t, Path: crane, Dir: work}
	repo := testnet.UniqueRepo("e2e/ctr")
	m := pushPlatformImage(t, r, work, n.Host()+"/"+repo+":v1", "linux/amd64", 2)
	pushed := craneDigest(r, n.Host()+"/"+repo+":v1")

	const other = "meshreg-mirror.test"
	hosts := filepath.Join(work, "certs.d")
	mirror := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: work}
	out := mirror.Run("mirror", "containerd", "--hosts-dir", hosts, "--registries", n.Host()+","+other+"=http://127.0.0.1:1", "--node", n.URL())
	t.Logf("meshreg mirror containerd:\n%s", out)
	for _, name := range []string{n.Host(), other} {
		b, err := os.ReadFile(filepath.Join(hosts, name, "hosts.toml"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s/hosts.toml:\n%s", name, b)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Requests the node answered 200 on a route, HEAD (containerd
	// resolves a tag with one) and GET.
	count := func(route string) float64 {
		v, err := n.Metric(ctx, "meshreg_http_requests_total", `route="`+route+`"`, `status="200"`)
		if err != nil {
			return 0 // no GET of the route yet
		}
		return v
	}
	for _, ref := range []string{n.Host() + "/" + repo + ":v1", other + "/" + repo + ":v1"} {
		manifests, blobs := count("manifest"), count("blob")
		if res := ctrd.Pull(ref, hosts); res.Err != nil {
			t.Fatalf("ctr images pull %s: %v\n%s%s", ref, res.Err, res.Stdout, res.Stderr)
		}
		if got := ctrd.ImageDigest(ref); got != pushed {
			t.Errorf("ctr images ls: %s is %q, want crane's %s", ref, got, pushed)
		}
		if !ctrd.Unpacked(ref) {
			t.Errorf("%s is not unpacked:\n%s", ref, ctrd.Run("images", "check"))
		}
		if got := count("manifest") - manifests; got < 1 {
			t.Errorf("pulling %s: the node answered %v manifest requests, want at least the resolve", ref, got)
		}
		// Each pull in a fresh namespace would fetch every blob; here the
		// second finds the layers in containerd's content store already
		// (same namespace), so only the first is counted for all of them.
		if ref == n.Host()+"/"+repo+":v1" {
			if got := count("blob") - blobs; got < float64(1+len(m.Layers)) {
				t.Errorf("pulling %s: the node answered %v blob requests, want the config and %d layers", ref, got, len(m.Layers))
			}
		}
	}

	// The node down: a hosts.toml whose node refuses connections falls
	// back to its server (here the live node, as the registry itself).
	down := filepath.Join(work, "certs-down.d")
	mirror.Run("mirror", "containerd", "--hosts-dir", down, "--registries", "fallback.test="+n.URL(), "--node", "http://127.0.0.1:1")
	ref := "fallback.test/" + repo + ":v1"
	start := time.Now()
	if res := ctrd.Pull(ref, down); res.Err != nil {
		t.Fatalf("ctr images pull %s with the node down: %v\n%s%s", ref, res.Err, res.Stdout, res.Stderr)
	}
	if got := ctrd.ImageDigest(ref); got != pushed {
		t.Errorf("ctr images ls: %s is %q, want crane's %s", ref, got, pushed)
	}
	t.Logf("pull with the node down, through the fallback: %s", time.Since(start).Round(time.Millisecond))
}

// TestPreloadACopyInEveryZone: two nodes in zones a and b (one replica,
// the image pushed to the node in a). `preload --zones` through the node
// in a alone names zone b as getting no copy; through both nodes, the node
// in b holds the image's blobs too.
func TestPreloadACopyInEveryZone(t *testing.T) {
	testnet.RequireProcess(t)
	base := []string{"--replicas", "1", "--stabilization-time", testnet.HarnessStabilization.String()}
	a := testnet.StartNode(t, testnet.Options{Args: append(append([]string{}, base...), "--zone", "a")})
	b := testnet.StartNode(t, testnet.Options{Args: append(append([]string{}, base...), "--zone", "b",
		"--join", a.URL(), "--join-token", testnet.JoinToken(t, a, time.Hour))})
	testnet.WaitConverged(t, []*testnet.Node{a, b}, 2, testnet.ExpectedVoters(2, 3), 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if !testnet.Eventually(30*time.Second, func() bool {
		st, err := a.Status(ctx)
		bst, err2 := b.Status(ctx)
		return err == nil && err2 == nil && st.KnowsZone(bst.NodeID, "b")
	}) {
		t.Fatal("node a never learned node b's zone")
	}

	crane := testnet.Tool(t, "crane")
	work := t.TempDir()
	r := testnet.Runner{T: t, Path: crane, Dir: work}
	repo := testnet.UniqueRepo("e2e/zones")
	m := pushPlatformImage(t, r, work, a.Host()+"/"+repo+":v1", "linux/amd64", 2)
	image := a.Host() + "/" + repo + ":v1"
	preload := func(nodes ...*testnet.Node) testnet.CmdResult {
		args := []string{"preload", "--zones", "--platform", "linux/amd64"}
		for _, n := range nodes {
			args = append(args, "--node", n.URL())
		}
		res := testnet.Cmd{Path: testnet.Binary(t), Args: append(args, image), Timeout: time.Minute}.Run(ctx)
		t.Logf("meshreg %s:\n%s%s", strings.Join(args, " "), res.Stdout, res.Stderr)
		if res.Err != nil {
			t.Fatalf("meshreg preload: %v", res.Err)
		}
		return res
	}

	res := preload(a)
	if !strings.Contains(string(res.Stderr), "zone a: through "+a.URL()) || !strings.Contains(string(res.Stderr), "zone b: no --node in it") {
		t.Errorf("through a alone: the output does not name zone a's node and zone b's missing copy")
	}
	if st, _ := b.Status(ctx); st.Blobs.Count != 0 {
		t.Errorf("node b holds %d blobs after a preload through a alone", st.Blobs.Count)
	}

	res = preload(a, b)
	if !strings.Contains(string(res.Stderr), "zone b: through "+b.URL()) || !strings.Contains(string(res.Stderr), "preloaded 1 of 1 images through 2 node(s)") {
		t.Errorf("through a and b: the output does not name zone b's node")
	}
	want := int64(1 + len(m.Layers))
	var st testnet.NodeStatus
	if !testnet.Eventually(10*time.Second, func() bool {
		st, _ = b.Status(ctx)
		return st.Blobs.Count == want
	}) {
		t.Errorf("node b holds %d blobs after the preload, want the image's %d", st.Blobs.Count, want)
	}
}
