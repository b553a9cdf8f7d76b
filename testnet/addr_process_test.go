package testnet_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshreg/meshreg/testnet"
)

// writeClusterKey writes a random private-network key in swarm.key form.
func writeClusterKey(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "swarm.key")
	if err := os.WriteFile(path, []byte("/key/swarm/psk/1.0.0/\n/base16/\n"+hex.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// p2pPortOf reads a node's libp2p TCP port from its Raft address.
func p2pPortOf(t *testing.T, n *testnet.Node) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ma.NewMultiaddr(st.RaftAddress)
	if err != nil {
		t.Fatalf("raft_address %q: %v", st.RaftAddress, err)
	}
	port, err := m.ValueForProtocol(ma.P_TCP)
	if err != nil {
		t.Fatalf("raft_address %q has no TCP port", st.RaftAddress)
	}
	return port
}

// serveUntil runs `meshreg serve args...` until its output contains want
// or it exits or timeout passes (then it is killed), and returns its
// output and whether it was still running.
func serveUntil(t *testing.T, want string, timeout time.Duration, args ...string) (out string, running bool) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "serve.log")
	p, err := testnet.StartProcess(testnet.ProcessConfig{
		Path: testnet.Binary(t), Args: append([]string{"serve", "--data-dir", t.TempDir()}, args...),
		LogPath: logPath, StripEnv: []string{"MESHREG_"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), want) {
			return string(b), !p.Exited()
		}
		select {
		case <-p.Done():
			b, _ := os.ReadFile(logPath)
			return string(b), false
		case <-time.After(50 * time.Millisecond):
		}
	}
	b, _ := os.ReadFile(logPath)
	return string(b), !p.Exited()
}

// TestSecondProcessOnP2PPortRefused starts a node, then a second meshreg
// process given the first one's --p2p-listen: it must exit at start with
// an error that names the port and --p2p-listen, instead of sharing the
// port (SO_REUSEPORT) and joining as a ghost of the first.
func TestSecondProcessOnP2PPortRefused(t *testing.T) {
	t.Parallel()
	first := testnet.StartNode(t, testnet.Options{})
	testnet.RequireProcess(t)
	port := p2pPortOf(t, first)
	api, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	want := "p2p port 127.0.0.1:" + port + " is in use by another process: pass --p2p-listen"
	out, running := serveUntil(t, want, 30*time.Second,
		"--listen", api, "--p2p-listen", "/ip4/127.0.0.1/tcp/"+port, "--join", first.URL())
	if !strings.Contains(out, want) {
		t.Fatalf("the second process did not say %q; its output:\n%s", want, out)
	}
	// It must exit, not serve.
	if running {
		time.Sleep(2 * time.Second)
	}
	if c, err := net.DialTimeout("tcp", api, time.Second); err == nil {
		c.Close()
		t.Errorf("the second process serves its API on %s although its p2p port is taken", api)
	}
}

// TestJoinWithoutClusterKeySaysSo starts a node with a cluster key, then a
// node without one (and one with another key) that joins it through its API
// URL: the joiner must say that the cluster key is probably missing (or
// different) and name --cluster-key, and the keyed node must log a WARN
// about it; so must a plain HTTP request to its p2p port (a --join URL
// with the wrong port).
func TestJoinWithoutClusterKeySaysSo(t *testing.T) {
	t.Parallel()
	keyed := testnet.StartNode(t, testnet.Options{Args: []string{"--cluster-key", writeClusterKey(t)}})
	testnet.RequireProcess(t)
	for _, tc := range []struct {
		name       string
		args       []string
		joinerSays string
		keyedSays  string
	}{
		{name: "no key", joinerSays: "probably it runs a private cluster and this node has no cluster key: pass the cluster's key file with --cluster-key",
			keyedSays: "a peer without the cluster key tried to connect"},
		{name: "other key", args: []string{"--cluster-key", writeClusterKey(t)},
			joinerSays: "probably its cluster key does not match this node's --cluster-key",
			keyedSays:  "a peer with another cluster key tried to connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api, err := testnet.FreeAddr()
			if err != nil {
				t.Fatal(err)
			}
			args := append([]string{"--listen", api, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--join", keyed.URL()}, tc.args...)
			out, _ := serveUntil(t, tc.joinerSays, 30*time.Second, args...)
			if !strings.Contains(out, tc.joinerSays) {
				t.Errorf("the joiner did not say %q; its output:\n%s", tc.joinerSays, out)
			}
			waitLog(t, keyed, tc.keyedSays)
		})
	}
	// A --join URL with the p2p port: the node says what it got.
	c := http.Client{Timeout: 5 * time.Second}
	if resp, err := c.Get("http://127.0.0.1:" + p2pPortOf(t, keyed) + "/_meshreg/v1/status"); err == nil {
		resp.Body.Close()
		t.Errorf("the p2p port answered HTTP: %s", resp.Status)
	}
	waitLog(t, keyed, "an HTTP client connected to the p2p port")
}

// waitLog waits up to 10 s for n's log to contain s.
func waitLog(t *testing.T, n *testnet.Node, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(n.LogPath())
		if strings.Contains(string(b), s) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the node did not log %q", s)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
