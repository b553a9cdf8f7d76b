package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestNodeURL(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:17001":            "http://127.0.0.1:17001",
		"localhost:5000":             "http://localhost:5000",
		"[::1]:5000":                 "http://[::1]:5000",
		"http://127.0.0.1:5000/":     "http://127.0.0.1:5000",
		"https://meshreg.example":    "https://meshreg.example",
		"https://r.example:443/mesh": "https://r.example:443/mesh",
	} {
		if got, err := nodeURL(in); err != nil || got != want {
			t.Errorf("nodeURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "127.0.0.1", ":5000", "ftp://h:1", "/ip4/127.0.0.1/tcp/4001", "http://", "http://h:1/?a=b"} {
		if got, err := nodeURL(in); err == nil || !strings.Contains(err.Error(), "want HOST:PORT or an http(s) URL") {
			t.Errorf("nodeURL(%q) = %q, %v; want an error saying what it wants", in, got, err)
		}
	}
}

// startServe runs `meshreg serve` in this process on loopback ports, with
// its data in a temporary directory, until the test ends; it returns the
// API's HOST:PORT once the node is ready.
func startServe(t *testing.T, extra ...string) string {
	t.Helper()
	clearMeshregEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Before t.Cleanup below, so that the directory is removed after the
	// node stopped (cleanups run last first).
	dataDir := filepath.Join(t.TempDir(), "data")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		app := newApp()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		done <- app.RunContext(ctx, append([]string{"meshreg", "serve", "--data-dir", dataDir, "--listen", addr,
			"--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--log-level", "error", "--shutdown-timeout", "1s"}, extra...))
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not stop within 30 s")
		}
	})
	client := &http.Client{Timeout: time.Second}
	scheme := "http://"
	if slices.Contains(extra, "--tls-cert") {
		// Readiness only: the tests check the certificate themselves.
		scheme = "https://"
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(scheme + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return addr
			}
		}
		select {
		case err := <-done:
			t.Fatalf("serve stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node on %s not ready within 30 s (last: %v)", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runMeshreg runs the meshreg command line in process and returns what it
// printed on stdout and stderr.
func runMeshreg(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"meshreg"}, args...))
	return out.String(), err
}

// TestClusterCommandsAgainstANode: against a real single-node cluster,
// --node takes HOST:PORT as well as a URL, and removing a peer that is
// no member fails, saying so, instead of printing "removed".
func TestClusterCommandsAgainstANode(t *testing.T) {
	addr := startServe(t)
	for _, node := range []string{addr, "http://" + addr, "http://" + addr + "/"} {
		out, err := runMeshreg(t, "cluster", "members", "--node", node)
		if err != nil || !strings.Contains(out, "PEER ID") || !strings.Contains(out, "Voter") {
			t.Errorf("cluster members --node %s: %v\n%s", node, err, out)
		}
	}
	// A single node is the whole fleet: the leader, no follower.
	if out, err := runMeshreg(t, "cluster", "nodes", "--node", addr); err != nil || !strings.Contains(out, "TAILS FROM") ||
		!strings.Contains(out, " leader ") || !strings.Contains(out, "1 nodes: 1 members, 0 followers") {
		t.Errorf("cluster nodes --node %s: %v\n%s", addr, err, out)
	}
	if out, err := runMeshreg(t, "token", "create", "--node", addr, "--ttl", "1m"); err != nil || !strings.Contains(out, "--join http://"+addr) {
		t.Errorf("token create --node %s: %v\n%s", addr, err, out)
	}

	// A valid peer id that is no member is revoked as a follower, whether
	// it ever ran or not; twice is a clear refusal.
	const stranger = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo" // a valid peer id, never a member
	out, err := runMeshreg(t, "cluster", "remove", "--node", addr, stranger)
	if err != nil || strings.TrimSpace(out) != "revoked follower "+stranger {
		t.Fatalf("cluster remove of a non-member: %v\n%s; want it revoked as a follower", err, out)
	}
	out, err = runMeshreg(t, "cluster", "remove", "--node", addr, stranger)
	if err == nil || !strings.Contains(err.Error(), stranger+" is already revoked") || strings.Contains(err.Error(), `{"errors"`) {
		t.Errorf("cluster remove of a revoked follower: %v\n%s", err, out)
	}
	out, err = runMeshreg(t, "cluster", "remove", "--node", addr, "not-a-peer-id")
	if err == nil || !strings.Contains(err.Error(), "not a member") || strings.Contains(out, "removed") {
		t.Errorf("cluster remove of a bad id: %v\n%s", err, out)
	}

	// The API answers 404 with an OCI-style JSON error for what is no peer
	// id, 409 ALREADY_REVOKED for a follower revoked before.
	for id, want := range map[string]string{"not-a-peer-id": "MEMBER_UNKNOWN", stranger: "ALREADY_REVOKED"} {
		req, _ := http.NewRequest(http.MethodDelete, "http://"+addr+"/_meshreg/v1/members/"+id, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Header.Get("Content-Type") != "application/json" || !bytes.Contains(body, []byte(`"code":"`+want+`"`)) {
			t.Errorf("DELETE %s: %s %s %s, want %s", id, resp.Status, resp.Header.Get("Content-Type"), body, want)
		}
	}

	var ue interface{ Error() string }
	if _, err := runMeshreg(t, "cluster", "members", "--node", "127.0.0.1"); !errors.As(err, &ue) || !strings.Contains(err.Error(), `--node "127.0.0.1": no port`) {
		t.Errorf("--node without a port: %v", err)
	}
}

// TestClusterCommandsWithAuth: against a node with --auth-htpasswd and
// --auth-policy, the admin commands send --username/--password (or
// MESHREG_USERNAME/MESHREG_PASSWORD); without the admin right they fail
// saying why.
func TestClusterCommandsWithAuth(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "htpasswd")
	pol := filepath.Join(dir, "policy.yaml")
	var lines []string
	for _, u := range []string{"alice", "bob"} {
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	writeFile(t, users, strings.Join(lines, "\n")+"\n")
	writeFile(t, pol, "rules:\n  - users: [authenticated]\n    repos: [\"**\"]\n    allow: [pull]\n  - users: [alice]\n    allow: [admin]\n")
	addr := startServe(t, "--auth-htpasswd", users, "--auth-policy", pol)

	if out, err := runMeshreg(t, "cluster", "members", "--node", addr, "--username", "alice", "--password", "alice-pw"); err != nil || !strings.Contains(out, "Voter") {
		t.Errorf("cluster members as alice: %v\n%s", err, out)
	}
	if out, err := runMeshreg(t, "token", "create", "--node", addr, "--username", "alice", "--password", "alice-pw"); err != nil || !strings.Contains(out, "--join http://"+addr) {
		t.Errorf("token create as alice: %v\n%s", err, out)
	}
	if _, err := runMeshreg(t, "token", "create", "--node", addr); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("token create without credentials: %v, want UNAUTHORIZED", err)
	}
	if _, err := runMeshreg(t, "token", "create", "--node", addr, "--username", "bob", "--password", "bob-pw"); err == nil || !strings.Contains(err.Error(), "DENIED") || !strings.Contains(err.Error(), "admin") {
		t.Errorf("token create as bob: %v, want DENIED naming the admin right", err)
	}
	if out, err := runMeshreg(t, "cluster", "nodes", "--node", addr, "--username", "alice", "--password", "alice-pw"); err != nil || !strings.Contains(out, " leader ") {
		t.Errorf("cluster nodes as alice: %v\n%s", err, out)
	}
	if _, err := runMeshreg(t, "cluster", "nodes", "--node", addr, "--username", "bob", "--password", "bob-pw"); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Errorf("cluster nodes as bob: %v, want DENIED naming the admin right", err)
	}
	t.Setenv("MESHREG_USERNAME", "bob")
	t.Setenv("MESHREG_PASSWORD", "bob-pw")
	const stranger = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	if _, err := runMeshreg(t, "cluster", "remove", "--node", addr, stranger); err == nil || !strings.Contains(err.Error(), "admin") {
		t.Errorf("cluster remove as bob (from the environment): %v, want a denial naming the admin right", err)
	}
	t.Setenv("MESHREG_USERNAME", "alice")
	t.Setenv("MESHREG_PASSWORD", "alice-pw")
	if out, err := runMeshreg(t, "cluster", "remove", "--node", addr, stranger); err != nil || !strings.Contains(out, "revoked follower "+stranger) {
		t.Errorf("cluster remove as alice (from the environment): %v\n%s, want the follower revoked", err, out)
	}
}
