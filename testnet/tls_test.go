package testnet_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api/tlsconf/tlstest"
	"github.com/meshreg/meshreg/testnet"
)

// environWithout is this process's environment without SSL_CERT_FILE and
// SSL_CERT_DIR: a client that knows only the system's CAs.
func environWithout() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSL_CERT_FILE=") && !strings.HasPrefix(kv, "SSL_CERT_DIR=") {
			env = append(env, kv)
		}
	}
	return env
}

// tlsNode starts a node serving HTTPS with a certificate of ca (serial
// 100), plus extra flags; it returns the node and the certificate and key
// files the node reads.
func tlsNode(t *testing.T, ca *tlstest.CA, extra ...string) (*testnet.Node, string, string) {
	t.Helper()
	cert, key := ca.Server(t, 100).Files(t)
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	n := testnet.StartNode(t, testnet.Options{
		Args:     append([]string{"--tls-cert", cert, "--tls-key", key}, extra...),
		TLSRoots: roots,
	})
	return n, cert, key
}

// TestTLSServing: a node started with --tls-cert and --tls-key serves
// HTTPS (HTTP/2 negotiated); crane and oras push and pull through it
// trusting the CA by SSL_CERT_FILE, and fail with a certificate error
// without it; `meshreg cluster members` and `token create` reach it by an
// https --node; a rotated certificate (new serial and SAN) is served
// without a restart.
func TestTLSServing(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t, "meshreg e2e CA")
	n, cert, key := tlsNode(t, ca)
	if !strings.HasPrefix(n.URL(), "https://") {
		t.Fatalf("node URL %s, want https", n.URL())
	}
	trust := []string{"SSL_CERT_FILE=" + ca.CertFile}

	fresh := n.HTTPClient()
	fresh.Transport.(*http.Transport).DisableKeepAlives = true // a handshake per request
	resp, err := fresh.Get(n.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Proto != "HTTP/2.0" {
		t.Errorf("GET /v2/: %s over %s, want 200 over HTTP/2.0", resp.Status, resp.Proto)
	}

	// crane: push, read back, pull; no --insecure.
	work := t.TempDir()
	crane := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: work, Env: trust}
	ref := n.Host() + "/" + testnet.UniqueRepo("e2e/tls-crane") + ":v1"
	layer := filepath.Join(work, "layer.tar")
	if _, err := testnet.WriteLayerTar(layer, "tls", 4, 1<<20); err != nil {
		t.Fatal(err)
	}
	out := strings.TrimSpace(string(crane.Run("append", "--oci-empty-base", "-t", ref, "-f", layer)))
	_, pushed, _ := strings.Cut(out, "@")
	if got := strings.TrimSpace(string(crane.Run("digest", ref))); got != pushed || pushed == "" {
		t.Errorf("crane digest %s = %q, want the pushed %q", ref, got, pushed)
	}
	crane.Run("pull", "--format", "oci", ref, filepath.Join(work, "pulled"))

	// Without the CA: a certificate error, nothing pushed.
	res := testnet.Cmd{Path: crane.Path, Args: []string{"digest", ref}, Dir: work, Environ: environWithout()}.Run(t.Context())
	if res.Err == nil || !strings.Contains(string(res.Stderr), "certificate") {
		t.Errorf("crane without the CA: %v\n%s, want a certificate error", res.Err, res.Stderr)
	}

	// oras: push a file, pull it back.
	oras := testnet.Runner{T: t, Path: testnet.Tool(t, "oras"), Dir: work, Env: trust}
	if err := os.WriteFile(filepath.Join(work, "hello.txt"), []byte("hello over TLS\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	oref := n.Host() + "/" + testnet.UniqueRepo("e2e/tls-oras") + ":art"
	oras.Run("push", "--no-tty", oref, "hello.txt")
	oras.Run("pull", "--no-tty", "-o", "pulled-oras", oref)
	if b, err := os.ReadFile(filepath.Join(work, "pulled-oras", "hello.txt")); err != nil || string(b) != "hello over TLS\n" {
		t.Errorf("oras pull: %q, %v", b, err)
	}
	res = testnet.Cmd{Path: oras.Path, Args: []string{"manifest", "fetch", oref}, Dir: work, Environ: environWithout()}.Run(t.Context())
	if res.Err == nil || !strings.Contains(string(res.Stderr), "certificate") {
		t.Errorf("oras without the CA: %v\n%s, want a certificate error", res.Err, res.Stderr)
	}

	// The meshreg CLI by an https --node.
	meshreg := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: work, Env: trust}
	if out := string(meshreg.Run("cluster", "members", "--node", n.URL())); !strings.Contains(out, "Voter") {
		t.Errorf("cluster members --node %s:\n%s", n.URL(), out)
	}
	if res := meshreg.Try("token", "create", "--node", n.URL(), "--ttl", "1m"); res.Err != nil || !strings.Contains(string(res.Stderr), "--join "+n.URL()) {
		t.Errorf("token create --node %s: %v\n%s", n.URL(), res.Err, res.Stderr)
	}
	res = testnet.Cmd{Path: meshreg.Path, Args: []string{"cluster", "members", "--node", n.URL()}, Dir: work, Environ: environWithout()}.Run(t.Context())
	if res.Err == nil || !strings.Contains(string(res.Stdout)+string(res.Stderr), "certificate") {
		t.Errorf("cluster members without the CA: %v\n%s%s, want a certificate error", res.Err, res.Stdout, res.Stderr)
	}

	// Rotation: new files in place, picked up on a later handshake.
	ca.Server(t, 101, "rotated.example").Write(t, cert, key)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := fresh.Get(n.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			leaf := resp.TLS.PeerCertificates[0]
			if leaf.SerialNumber.Int64() == 101 {
				if len(leaf.DNSNames) < 2 || leaf.DNSNames[1] != "rotated.example" {
					t.Errorf("rotated certificate names %v, want rotated.example too", leaf.DNSNames)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rotated certificate (serial 101) was not served within 20 s (last: %v)", err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if got := strings.TrimSpace(string(crane.Run("digest", ref))); got != pushed {
		t.Errorf("after rotation: crane digest %q, want %q", got, pushed)
	}
	if b, _ := os.ReadFile(n.LogPath()); strings.Contains(string(b), "plain HTTP beyond loopback") {
		t.Error("a TLS node warned about plain HTTP")
	}
}

// TestTLSClientCA: with --tls-client-ca, a client without a certificate
// gets 401 UNAUTHORIZED (the probes excepted) and one with a certificate
// of that CA is served.
func TestTLSClientCA(t *testing.T) {
	t.Parallel()
	clients := tlstest.NewCA(t, "meshreg e2e client CA")
	n, _, _ := tlsNode(t, tlstest.NewCA(t, "meshreg e2e CA"), "--tls-client-ca", clients.CertFile)
	anon := n.HTTPClient()
	for path, want := range map[string]int{"/v2/": http.StatusUnauthorized, "/_meshreg/v1/status": http.StatusUnauthorized, "/healthz": http.StatusOK, "/readyz": http.StatusOK} {
		resp, err := anon.Get(n.URL() + path)
		if err != nil {
			t.Fatalf("GET %s without a client certificate: %v", path, err)
		}
		var body struct{ Errors []struct{ Code string } }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != want || want == http.StatusUnauthorized && (len(body.Errors) != 1 || body.Errors[0].Code != "UNAUTHORIZED") {
			t.Errorf("GET %s without a client certificate: %s %+v, want %d", path, resp.Status, body, want)
		}
	}

	leaf := clients.Client(t, 7, "ci-runner")
	pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	withCert := n.HTTPClient()
	withCert.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{pair}
	for _, path := range []string{"/v2/", "/_meshreg/v1/status"} {
		resp, err := withCert.Get(n.URL() + path)
		if err != nil {
			t.Fatalf("GET %s with a client certificate: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with a client certificate: %s, want 200", path, resp.Status)
		}
	}
}

// TestPlainHTTPWarnsBeyondLoopback: a node without TLS listening on every
// interface says at start, once, that it serves plain HTTP; one on
// loopback does not.
func TestPlainHTTPWarnsBeyondLoopback(t *testing.T) {
	t.Parallel()
	testnet.RequireProcess(t)
	bin := testnet.Binary(t)
	for _, tc := range []struct {
		host string
		warn bool
	}{{"0.0.0.0", true}, {"127.0.0.1", false}} {
		addr, err := testnet.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := strings.Cut(addr, ":")
		dir := t.TempDir()
		logPath := filepath.Join(dir, "node.log")
		p, err := testnet.StartProcess(testnet.ProcessConfig{
			Name: "meshreg " + tc.host, Path: bin, LogPath: logPath, StripEnv: []string{"MESHREG_"},
			Args: []string{"serve", "--listen", tc.host + ":" + port, "--data-dir", filepath.Join(dir, "data"), "--p2p-listen", "/ip4/127.0.0.1/tcp/0"},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		err = p.WaitHTTP(ctx, "http://127.0.0.1:"+port+"/healthz", http.StatusOK)
		cancel()
		if serr := p.Stop(30 * time.Second); serr != nil {
			t.Errorf("stopping the node on %s: %v", tc.host, serr)
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(logPath)
		if n := strings.Count(string(b), "plain HTTP beyond loopback"); n != map[bool]int{true: 1, false: 0}[tc.warn] {
			t.Errorf("--listen %s:%s logged the plain-HTTP warning %d times, want it %v:\n%s", tc.host, port, n, tc.warn, b)
		}
	}
}

// TestTLSJoin: nodes serving HTTPS join each other by their https API
// URL, trusting the CA through SSL_CERT_FILE, as the Helm chart has them.
func TestTLSJoin(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t, "meshreg e2e cluster CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	opts := func() testnet.Options {
		cert, key := ca.Server(t, 200).Files(t)
		return testnet.Options{Args: []string{"--tls-cert", cert, "--tls-key", key}, Env: []string{"SSL_CERT_FILE=" + ca.CertFile}, TLSRoots: roots}
	}
	first := testnet.StartNode(t, opts())
	o := opts()
	o.Args = append(o.Args, "--join", first.URL(), "--join-token", testnet.JoinToken(t, first, time.Hour))
	second := testnet.StartNode(t, o)
	testnet.WaitConverged(t, []*testnet.Node{first, second}, 2, testnet.ExpectedVoters(2, 3), 60*time.Second)
}
