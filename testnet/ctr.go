package testnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// EnvContainerd is the containerd socket the real-containerd tests use
// (default: the first of ContainerdAddresses that exists).
const EnvContainerd = "MESHREG_E2E_CONTAINERD"

// ContainerdAddresses are where a Docker engine's containerd listens: its
// own (dockerd started it), else the system's (containerd.io packages).
var ContainerdAddresses = []string{"/var/run/docker/containerd/containerd.sock", "/run/containerd/containerd.sock"}

// Containerd is the machine's containerd, driven through ctr in a
// namespace of the test's own (meshreg-e2e-<random>), which is emptied and
// removed when the test ends: the test's images never mix with anybody
// else's, and two tests never see each other's.
type Containerd struct {
	t         testing.TB
	ctr       string
	Address   string
	Namespace string
}

// UseContainerd returns a Containerd with a fresh namespace. A missing ctr
// or an unreachable socket fails the test, saying which: a skipped
// real-containerd test would hide a broken setup.
func UseContainerd(t testing.TB) *Containerd {
	t.Helper()
	ctr, err := exec.LookPath("ctr")
	if err != nil {
		t.Fatalf("ctr not found in PATH: the real-containerd tests need containerd's ctr (Debian: containerd or containerd.io) and a containerd socket (%s, or set %s)", strings.Join(ContainerdAddresses, " or "), EnvContainerd)
	}
	addr := os.Getenv(EnvContainerd)
	for _, a := range ContainerdAddresses {
		if _, err := os.Stat(a); addr == "" && err == nil {
			addr = a
		}
	}
	if addr == "" {
		t.Fatalf("no containerd socket at %s: start containerd (the Docker engine runs one) or set %s", strings.Join(ContainerdAddresses, " or "), EnvContainerd)
	}
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	c := &Containerd{t: t, ctr: ctr, Address: addr, Namespace: "meshreg-e2e-" + hex.EncodeToString(b)}
	if res := c.Try("version"); res.Err != nil {
		t.Fatalf("containerd at %s does not answer (set %s to its socket): %v\n%s", addr, EnvContainerd, res.Err, res.Stderr)
	}
	c.Run("namespaces", "create", c.Namespace)
	t.Cleanup(c.cleanup)
	return c
}

// cmd is one ctr command in the test's namespace.
func (c *Containerd) cmd(args []string) Cmd {
	return Cmd{Path: c.ctr, Args: append([]string{"--address", c.Address, "--namespace", c.Namespace}, args...), Timeout: 2 * time.Minute}
}

// Try runs ctr with args in the test's namespace, whatever its exit.
func (c *Containerd) Try(args ...string) CmdResult {
	c.t.Helper()
	cmd := c.cmd(args)
	res := cmd.Run(context.Background())
	status := "ok"
	if res.Err != nil {
		status = res.Err.Error()
	}
	c.t.Logf("$ %s  [%s, %v]", cmd, status, res.Duration.Round(time.Millisecond))
	return res
}

// Run runs ctr with args; a non-zero exit fails the test with both outputs.
func (c *Containerd) Run(args ...string) []byte {
	c.t.Helper()
	res := c.Try(args...)
	if res.Err != nil {
		c.t.Fatalf("ctr %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.Err, clip(res.Stdout), clip(res.Stderr))
	}
	return res.Stdout
}

// Pull pulls ref with the hosts.toml files of hostsDir (ctr images pull
// --hosts-dir), unpacking it for this machine's platform; extra are more
// pull flags (e.g. --plain-http).
func (c *Containerd) Pull(ref, hostsDir string, extra ...string) CmdResult {
	c.t.Helper()
	args := append([]string{"images", "pull", "--hosts-dir", hostsDir}, extra...)
	return c.Try(append(args, ref)...)
}

// ImageDigest is the digest `ctr images ls` shows for ref ("" if it is not
// there).
func (c *Containerd) ImageDigest(ref string) digest.Digest {
	c.t.Helper()
	for _, line := range strings.Split(string(c.Run("images", "ls")), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			return digest.Digest(f[2])
		}
	}
	return ""
}

// Unpacked reports whether ref is unpacked into containerd's default
// snapshotter (`ctr images check` says so per image).
func (c *Containerd) Unpacked(ref string) bool {
	c.t.Helper()
	for _, line := range strings.Split(string(c.Run("images", "check")), "\n") {
		f := strings.Fields(line)
		if len(f) >= 1 && f[0] == ref {
			return strings.Contains(line, "complete") && strings.HasSuffix(strings.TrimSpace(line), "true")
		}
	}
	return false
}

// cleanup removes the namespace's images (waiting for containerd to
// collect their content and snapshots) and then the namespace. Whatever
// is left is logged with the commands to remove it by hand.
func (c *Containerd) cleanup() {
	list := c.cmd([]string{"images", "ls", "-q"}).Run(context.Background())
	var refs []string
	for _, r := range strings.Fields(string(list.Stdout)) {
		refs = append(refs, r)
	}
	if len(refs) > 0 {
		if res := c.cmd(append([]string{"images", "rm", "--sync"}, refs...)).Run(context.Background()); res.Err != nil {
			c.t.Logf("containerd cleanup: removing images of %s: %v %s", c.Namespace, res.Err, res.Stderr)
		}
	}
	var last CmdResult
	for range 20 {
		last = Cmd{Path: c.ctr, Args: []string{"--address", c.Address, "namespaces", "rm", c.Namespace}, Timeout: 30 * time.Second}.Run(context.Background())
		if last.Err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Errorf("containerd cleanup: namespace %s not removed: %v %s (remove it by hand: ctr --address %s -n %s images ls / content ls / snapshots ls, then namespaces rm)",
		c.Namespace, last.Err, last.Stderr, c.Address, c.Namespace)
}

// String names the containerd and namespace, for messages.
func (c *Containerd) String() string {
	return fmt.Sprintf("containerd %s namespace %s", c.Address, c.Namespace)
}
