package testnet_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/distribution"
)

// containerdSocket is the Docker engine's containerd, which the test uses
// through ctr in a namespace of its own (never the engine's "moby").
const containerdSocket = "/var/run/docker/containerd/containerd.sock"

// writeContainerdHosts writes the hosts directory that makes containerd
// pull registry `name` through the meshreg node at nodeURL, falling back to
// the registry's own server: what `meshreg mirror containerd` writes.
func writeContainerdHosts(t *testing.T, dir, name, serverURL, nodeURL string) {
	t.Helper()
	hostDir := filepath.Join(dir, name)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	toml := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"2s\"\n", serverURL, nodeURL)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestContainerdPullsThroughMirror: the machine's containerd pulls an
// image by its upstream name through node 2 of a three-node mirror (a
// hosts directory naming the node, ?ns= on every request); the image
// unpacks and its digest is the upstream's. With the upstream then
// stopped, a fresh containerd namespace pulls it again: only the node can
// have served it.
func TestContainerdPullsThroughMirror(t *testing.T) {
	t.Parallel()
	testnet.RequireProcess(t)
	ctrBin, err := exec.LookPath("ctr")
	if err != nil {
		t.Skip("ctr (containerd's client) is not installed: no real containerd to pull with")
	}
	if _, err := os.Stat(containerdSocket); err != nil {
		t.Skipf("no containerd socket at %s: %v", containerdSocket, err)
	}
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
	writeContainerdHosts(t, hosts, name, upstream.URL, node2.URL())

	ref := name + "/team/app:v1"
	pull := func(ns string) digest.Digest {
		t.Helper()
		ctr := testnet.Runner{T: t, Path: ctrBin, Dir: work}
		t.Cleanup(func() { removeContainerdNamespace(t, ctrBin, ns) })
		out := ctr.Run("--address", containerdSocket, "-n", ns, "images", "pull", "--hosts-dir", hosts, "--platform", "linux/amd64", ref)
		if !strings.Contains(string(out), "unpacking linux/amd64") {
			t.Errorf("ctr images pull did not unpack the image:\n%s", out)
		}
		for _, line := range strings.Split(string(ctr.Run("--address", containerdSocket, "-n", ns, "images", "ls")), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == ref {
				return digest.Digest(f[2])
			}
		}
		t.Fatalf("ctr images ls in %s does not list %s", ns, ref)
		return ""
	}
	if got := pull("meshreg-test-" + testnet.RandomHex(6)); got != want {
		t.Fatalf("containerd pulled %s as %s, want the upstream's %s", ref, got, want)
	}
	misses, err := node2.Metric(t.Context(), "meshreg_mirror_requests_total", `result="miss"`, `upstream="`+name+`"`)
	if err != nil || misses < 1 {
		t.Errorf("node 2 counted %v mirror misses (%v): containerd did not pull through it", misses, err)
	}

	upstream.Stop()
	if got := pull("meshreg-test-" + testnet.RandomHex(6)); got != want {
		t.Fatalf("with the upstream stopped, containerd pulled %s as %s, want %s", ref, got, want)
	}
}

// removeContainerdNamespace deletes what the test pulled into namespace ns
// of containerd (the image, its snapshots and content) and the namespace.
// It runs at cleanup, after the test's context ended, with its own bound.
func removeContainerdNamespace(t *testing.T, ctrBin, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(args ...string) string {
		out, err := exec.CommandContext(ctx, ctrBin, append([]string{"--address", containerdSocket, "-n", ns}, args...)...).CombinedOutput()
		if err != nil {
			t.Logf("cleanup: ctr %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, line := range strings.Split(run("images", "ls", "-q"), "\n") {
		if ref := strings.TrimSpace(line); ref != "" {
			run("images", "rm", "--sync", ref)
		}
	}
	for i := 0; i < 10; i++ { // snapshots are removed child first
		lines := strings.Split(strings.TrimSpace(run("snapshots", "ls")), "\n")[1:]
		if len(lines) == 0 {
			break
		}
		for _, line := range lines {
			if f := strings.Fields(line); len(f) > 0 {
				_, _ = exec.CommandContext(ctx, ctrBin, "--address", containerdSocket, "-n", ns, "snapshots", "rm", f[0]).CombinedOutput()
			}
		}
	}
	for _, line := range strings.Split(run("content", "ls", "-q"), "\n") {
		if d := strings.TrimSpace(line); d != "" {
			run("content", "rm", d)
		}
	}
	run("namespaces", "rm", ns)
}
