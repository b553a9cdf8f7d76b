package testnet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Environment variables that steer the harness.
const (
	// EnvRegistry (host:port) points the client tests at an already running
	// registry instead of a meshreg process the harness starts. Tests that
	// need to stop, kill or restart the process skip in that mode.
	EnvRegistry = "MESHREG_E2E_REGISTRY"
	// EnvBinary names a prebuilt meshreg binary to use instead of building
	// ./cmd/meshreg once per test binary.
	EnvBinary = "MESHREG_E2E_BIN"
	// EnvKeep=1 keeps every test's directories (data, logs, reports), not
	// only those of failed tests.
	EnvKeep = "MESHREG_E2E_KEEP"
	// EnvDir is the parent of the directories tests create (default: the
	// system temp dir).
	EnvDir = "MESHREG_E2E_DIR"
	// EnvReadyPath overrides the readiness path polled after a start
	// (default /readyz); for running the harness against a stand-in server.
	EnvReadyPath = "MESHREG_E2E_READY_PATH"
)

// Options configure a node started by StartNode. The zero value is a
// single node with default settings.
type Options struct {
	Args         []string      // extra `meshreg serve` flags
	Env          []string      // extra environment, KEY=VALUE
	ReadyTimeout time.Duration // how long to wait for /readyz; default 60s
	StopTimeout  time.Duration // how long Stop waits after SIGTERM; default 30s
	// TLSRoots, set when Args has --tls-cert and --tls-key, are the CAs
	// that signed the node's certificate: URL is then https and the
	// readiness probe trusts them.
	TLSRoots *x509.CertPool
}

// Node is a meshreg registry under test: either a process the harness
// started (with its own port, data dir and log file) or, when
// MESHREG_E2E_REGISTRY is set, an external registry it only talks to.
type Node struct {
	t        testing.TB
	opts     Options
	host     string // host:port
	p2pPort  string // libp2p TCP port on 127.0.0.1
	external bool

	mu      sync.Mutex
	dir     string // holds data/ and node.log
	dataDir string
	logPath string
	proc    *Process
	starts  int
}

// StartNode starts a meshreg node on a free 127.0.0.1 port with a fresh
// data dir and waits until it is ready. It is stopped (SIGTERM) when the
// test ends; if the test failed, the tail of its log is printed and its
// directory is kept. With MESHREG_E2E_REGISTRY set it returns a Node for
// that registry instead.
func StartNode(t testing.TB, opts Options) *Node {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 30 * time.Second
	}
	if ext := os.Getenv(EnvRegistry); ext != "" {
		n := &Node{t: t, opts: opts, host: ext, external: true}
		n.waitExternal()
		return n
	}
	bin := Binary(t)
	dir := KeepDir(t, "node")
	n := &Node{t: t, opts: opts, dir: dir, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "node.log")}
	if err := os.MkdirAll(n.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Registered after KeepDir's cleanup, so it runs before it.
	t.Cleanup(n.cleanup)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		n.host, err = FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		p2pAddr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, n.p2pPort, _ = net.SplitHostPort(p2pAddr)
		if err = n.start(bin); err == nil {
			return n
		}
		if !n.portTaken() {
			break
		}
		t.Logf("testnet: %s was taken meanwhile, trying another port", n.host)
	}
	t.Fatalf("testnet: start meshreg: %v", err)
	return nil
}

// RequireProcess skips the test when the registry is external
// (MESHREG_E2E_REGISTRY), because the test needs to control the process.
func RequireProcess(t testing.TB) {
	t.Helper()
	if ext := os.Getenv(EnvRegistry); ext != "" {
		t.Skipf("%s=%s: this test starts, kills and restarts its own meshreg process; unset %s to run it",
			EnvRegistry, ext, EnvRegistry)
	}
}

// External reports whether the node is an external registry.
func (n *Node) External() bool { return n.external }

// Host is the registry's host:port, as used in image references.
func (n *Node) Host() string { return n.host }

// URL is the registry's base URL, http://host:port (https with
// Options.TLSRoots).
func (n *Node) URL() string {
	if n.opts.TLSRoots != nil {
		return "https://" + n.host
	}
	return "http://" + n.host
}

// HTTPClient is a client for the node: one trusting Options.TLSRoots when
// it serves TLS.
func (n *Node) HTTPClient() *http.Client {
	c := &http.Client{Timeout: 30 * time.Second}
	if n.opts.TLSRoots != nil {
		c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: n.opts.TLSRoots}, ForceAttemptHTTP2: true}
	}
	return c
}

// DataDir is the node's --data-dir ("" for an external registry).
func (n *Node) DataDir() string { return n.dataDir }

// LogPath is the file holding the node's stdout and stderr.
func (n *Node) LogPath() string { return n.logPath }

// PID is the node's current process id (0 if not running or external).
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil || n.proc.Exited() {
		return 0
	}
	return n.proc.PID()
}

func (n *Node) start(bin string) error { return n.startWaiting(bin, readyPath()) }

// startWaiting starts the node and waits until path answers 200.
func (n *Node) startWaiting(bin, path string) error {
	args := []string{"serve", "--listen", n.host, "--data-dir", n.dataDir, "--log-format", "json"}
	if !slices.Contains(n.opts.Args, "--p2p-listen") {
		// The same libp2p port on every start, so that peers that know this
		// node's Raft address reach it again after a restart.
		args = append(args, "--p2p-listen", "/ip4/127.0.0.1/tcp/"+n.p2pPort)
	}
	args = append(args, n.opts.Args...)
	p, err := StartProcess(ProcessConfig{
		Name: "meshreg " + n.host, Path: bin, Args: args, Env: n.opts.Env,
		Dir: n.dir, LogPath: n.logPath, StripEnv: []string{"MESHREG_"},
	})
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.proc = p
	n.starts++
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), n.opts.ReadyTimeout)
	defer cancel()
	if err := p.WaitHTTPWith(ctx, n.HTTPClient(), n.URL()+path, http.StatusOK); err != nil {
		p.Kill()
		return err
	}
	return nil
}

func readyPath() string {
	if p := os.Getenv(EnvReadyPath); p != "" {
		return p
	}
	return "/readyz"
}

// portTaken reports whether the node's last start failed because its port
// was in use (another process took the free port between probe and bind).
func (n *Node) portTaken() bool {
	b, _ := os.ReadFile(n.logPath)
	return strings.Contains(string(b), "address already in use")
}

func (n *Node) requireProcess(op string) {
	n.t.Helper()
	if n.external {
		n.t.Skipf("%s: cannot %s an external registry (%s=%s)", n.t.Name(), op, EnvRegistry, n.host)
	}
}

// Stop sends SIGTERM and waits for the node to exit. It fails the test if
// the node does not exit in time or exits with a non-zero status.
func (n *Node) Stop() {
	n.t.Helper()
	n.requireProcess("stop")
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p == nil || p.Exited() {
		return
	}
	if err := p.Stop(n.opts.StopTimeout); err != nil {
		n.t.Errorf("graceful stop: %v", err)
	}
}

// Kill sends SIGKILL and waits for the node to be gone.
func (n *Node) Kill() {
	n.t.Helper()
	n.requireProcess("kill")
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p != nil {
		p.Kill()
	}
}

// Restart stops the node if it is running (SIGTERM) and starts it again on
// the same port with the same data dir, then waits until it is ready.
func (n *Node) Restart() {
	n.t.Helper()
	n.restartWaiting(readyPath())
}

// RestartAlive is Restart for a node that is not to be ready (a revoked
// one): it waits until /healthz answers 200 only.
func (n *Node) RestartAlive() {
	n.t.Helper()
	n.restartWaiting("/healthz")
}

func (n *Node) restartWaiting(path string) {
	n.t.Helper()
	n.requireProcess("restart")
	n.Stop()
	var err error
	// The old listener's port is free once the process is gone; retry a
	// little in case the kernel is slow to release it.
	for i := 0; i < 3; i++ {
		if err = n.startWaiting(Binary(n.t), path); err == nil || !n.portTaken() {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		n.t.Fatalf("testnet: restart meshreg: %v", err)
	}
}

func (n *Node) cleanup() {
	n.mu.Lock()
	p := n.proc
	n.mu.Unlock()
	if p != nil && !p.Exited() {
		if err := p.Stop(n.opts.StopTimeout); err != nil {
			n.t.Errorf("graceful stop at end of test: %v", err)
		}
	}
	if n.t.Failed() {
		tail, cut, err := TailFile(n.logPath, 150)
		if err != nil {
			n.t.Logf("node log %s: %v", n.logPath, err)
			return
		}
		more := ""
		if cut {
			more = " (last 150 lines)"
		}
		n.t.Logf("meshreg log %s%s:\n%s", n.logPath, more, tail)
	}
}

// waitExternal checks that an external registry answers GET /v2/.
func (n *Node) waitExternal() {
	n.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(n.opts.ReadyTimeout)
	for {
		resp, err := client.Get(n.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
			err = fmt.Errorf("GET /v2/: %s", resp.Status)
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("external registry %s=%s does not answer: %v", EnvRegistry, n.host, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// FreeAddr returns a 127.0.0.1:port whose port was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("testnet: find a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

// RestartOnNewP2PPort restarts the node (SIGTERM, then start) on a new
// libp2p port, as a pod that comes back with a new address does.
func (n *Node) RestartOnNewP2PPort() {
	n.t.Helper()
	n.requireProcess("restart")
	n.Stop()
	addr, err := FreeAddr()
	if err != nil {
		n.t.Fatal(err)
	}
	n.mu.Lock()
	_, n.p2pPort, _ = net.SplitHostPort(addr)
	n.mu.Unlock()
	n.Restart()
}
