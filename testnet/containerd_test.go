package testnet_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/distribution"
)

// TestContainerdPullsThroughMirror: the machine's containerd pulls an
// image by its upstream name through node 2 of a three-node mirror, with
// the hosts directory `meshreg mirror containerd` wrote (the node as the
// mirror host, ?ns= on every request; the upstream as the fallback
// server); the image unpacks, its digest is the upstream's, and node 2
// counted mirror requests. With the upstream then stopped, a fresh
// containerd namespace pulls it again: only the cluster can have served it.
func TestContainerdPullsThroughMirror(t *testing.T) {
	t.Parallel()
	testnet.RequireProcess(t)
	first := testnet.UseContainerd(t)
	work := t.TempDir()
	upstream, err := distribution.Start(t.Context(), distribution.Options{Dir: filepath.Join(work, "upstream"), Users: map[string]string{"up": "up-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(upstream.Stop)
	home := filepath.Join(work, "home")
	up := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: work, Env: []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}}
	up.Run("auth", "login", upstream.Addr, "-u", "up", "-p", "up-pw")
	want := pushUpstreamImage(t, up, upstream.Addr, "team/app", "v1", "ctr")
	name := upstream.Addr

	creds := dockerConfigAuth(t, filepath.Join(work, "upstream-auth.json"), name, "up", "up-pw")
	nodes := testnet.StartCluster(t, 3, testnet.Options{Args: []string{
		"--upstream", name + "=" + upstream.URL, "--upstream-credentials", creds,
	}})
	node2 := nodes[1]
	hosts := filepath.Join(work, "certs.d")
	meshreg := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: work}
	meshreg.Run("mirror", "containerd", "--hosts-dir", hosts, "--registries", name+"="+upstream.URL, "--node", node2.URL())
	if b, err := os.ReadFile(filepath.Join(hosts, name, "hosts.toml")); err == nil {
		t.Logf("%s/hosts.toml:\n%s", name, b)
	}

	ref := name + "/team/app:v1"
	for i, ctrd := range []*testnet.Containerd{first, nil} {
		if ctrd == nil {
			// The upstream stopped: the cluster alone can serve the pull.
			upstream.Stop()
			ctrd = testnet.UseContainerd(t)
		}
		if res := ctrd.Pull(ref, hosts, "--platform", "linux/amd64"); res.Err != nil {
			t.Fatalf("pull %d: ctr images pull %s: %v\n%s", i+1, ref, res.Err, res.Stderr)
		}
		if got := ctrd.ImageDigest(ref); got != want {
			t.Fatalf("pull %d: containerd has %s as %s, want the upstream's %s", i+1, ref, got, want)
		}
		if !ctrd.Unpacked(ref) {
			t.Errorf("pull %d: %s is not unpacked", i+1, ref)
		}
	}
	misses, err := node2.Metric(t.Context(), "meshreg_mirror_requests_total", `result="miss"`, `upstream="`+name+`"`)
	if err != nil || misses < 1 {
		t.Errorf("node 2 counted %v mirror misses (%v): containerd did not pull through it", misses, err)
	}
}
