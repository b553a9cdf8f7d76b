package testnet_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/testnet"
)

// bearerTransport sends an Authorization header with every request.
type bearerTransport struct {
	auth string
	base http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", b.auth)
	return b.base.RoundTrip(r)
}

// clientWith is a testnet client of n that sends the Authorization header
// auth.
func clientWith(n *testnet.Node, auth string) *testnet.Client {
	c := testnet.NewClient(n.URL())
	c.HTTP.Transport = bearerTransport{auth: auth, base: c.HTTP.Transport}
	return c
}

// fetchToken asks n's token endpoint for scopes as user (Basic; "" for
// anonymous), as Docker does; it retries 503 (no key yet) for up to 30 s.
func fetchToken(t *testing.T, n *testnet.Node, user string, scopes ...string) string {
	t.Helper()
	q := url.Values{"service": {"meshreg"}, "scope": scopes}
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequest("GET", n.URL()+"/_meshreg/v1/token?"+q.Encode(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, user+"-pw")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var tr struct {
			Token string `json:"token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&tr)
		resp.Body.Close()
		switch {
		case resp.StatusCode == 200 && err == nil && tr.Token != "":
			return tr.Token
		case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "" && time.Now().Before(deadline):
			time.Sleep(200 * time.Millisecond)
			continue
		}
		t.Fatalf("token from %s for %s: status %d, %v", n.Host(), user, resp.StatusCode, err)
	}
}

// status GETs path on n with the Authorization header auth.
func status(t *testing.T, n *testnet.Node, path, auth string) int {
	t.Helper()
	code, _, _, err := testnet.NewClient(n.URL()).Get(context.Background(), path, http.Header{"Authorization": {auth}})
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// refusedEverywhere polls every node until each answers path with want,
// and fails if that takes more than 5 s from start.
func refusedEverywhere(t *testing.T, nodes []*testnet.Node, path, auth string, want int, start time.Time, what string) {
	t.Helper()
	for i, n := range nodes {
		for {
			got := status(t, n, path, auth)
			if got == want {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s: node %d still answers %d 5 s later, want %d", what, i+1, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("%s: refused on all %d nodes %v after the change", what, len(nodes), time.Since(start).Round(10*time.Millisecond))
}

// TestTokensAcrossTheCluster: three meshreg processes share one htpasswd
// file and one policy. A token issued by node 1 is accepted by node 3 (the
// signing key is replicated through Raft); removing a user or narrowing the
// policy refuses their tokens on every node within 5 s; crane, logged in
// with `crane auth login`, pushes and pulls through the Bearer flow.
func TestTokensAcrossTheCluster(t *testing.T) {
	t.Parallel()
	testnet.RequireProcess(t)
	work := t.TempDir()
	users, pol := filepath.Join(work, "htpasswd"), filepath.Join(work, "policy.yaml")
	writeHtpasswd(t, users, "alice", "bob")
	if err := os.WriteFile(pol, []byte(authPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := testnet.StartCluster(t, 3, testnet.Options{Args: []string{"--cluster-key", writeClusterKey(t),
		"--auth-htpasswd", users, "--auth-policy", pol}})
	n1, n3 := nodes[0], nodes[2]
	ctx := context.Background()

	// The challenge points at the node's own token service.
	resp, err := http.Get(n3.URL() + "/v2/team/app/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("WWW-Authenticate"), `Bearer realm="`+n3.URL()+`/_meshreg/v1/token",service="meshreg",scope="repository:team/app:pull"`; got != want {
		t.Errorf("challenge %s, want %s", got, want)
	}

	// crane: login, push and pull through the Bearer flow.
	crane := testnet.Tool(t, "crane")
	home := filepath.Join(work, "home")
	alice := testnet.Runner{T: t, Path: crane, Dir: work, Env: []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}}
	alice.Run("auth", "login", n1.Host(), "-u", "alice", "-p", "alice-pw")
	layer := filepath.Join(work, "layer.tar")
	if _, err := testnet.WriteLayerTar(layer, "l", 2, 64<<10); err != nil {
		t.Fatal(err)
	}
	fetchToken(t, n1, "alice") // waits for the cluster's first key
	before, err := n1.Metric(ctx, "meshreg_auth_tokens_issued_total")
	if err != nil {
		t.Fatal(err)
	}
	alice.Run("append", "--insecure", "--oci-empty-base", "-t", n1.Host()+"/team/app:v1", "-f", layer)
	alice.Run("pull", "--insecure", "--format", "oci", n1.Host()+"/team/app:v1", filepath.Join(work, "pulled"))
	after, err := n1.Metric(ctx, "meshreg_auth_tokens_issued_total")
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("crane pushed and pulled without the token service: tokens issued %v before, %v after", before, after)
	}
	t.Logf("crane push+pull: %v tokens issued", after-before)

	// oras, logged in on node 2, pushes there and pulls from node 3.
	n2 := nodes[1]
	oras := testnet.Runner{T: t, Path: testnet.Tool(t, "oras"), Dir: work, Env: []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}}
	oras.Run("login", "--plain-http", "-u", "alice", "-p", "alice-pw", n2.Host())
	if err := os.WriteFile(filepath.Join(work, "notes.txt"), []byte("through the token service\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	before = metric(t, n2, "meshreg_auth_tokens_issued_total")
	oras.Run("push", "--plain-http", "--no-tty", n2.Host()+"/team/oras:v1", "notes.txt:text/plain")
	if after := metric(t, n2, "meshreg_auth_tokens_issued_total"); after <= before {
		t.Errorf("oras pushed without the token service (tokens issued %v before, %v after)", before, after)
	}
	oras.Run("login", "--plain-http", "-u", "alice", "-p", "alice-pw", n3.Host())
	pulled := filepath.Join(work, "oras-pulled")
	if !testnet.Eventually(10*time.Second, func() bool {
		return oras.Try("pull", "--plain-http", "--no-tty", "-o", pulled, n3.Host()+"/team/oras:v1").Err == nil
	}) {
		t.Fatal("oras could not pull team/oras:v1 from node 3")
	}
	if b, err := os.ReadFile(filepath.Join(pulled, "notes.txt")); err != nil || string(b) != "through the token service\n" {
		t.Errorf("oras pulled %q, %v", b, err)
	}

	// A token from node 1, used on node 3.
	aliceTok := "Bearer " + fetchToken(t, n1, "alice", "repository:team/app:pull")
	bobTok := "Bearer " + fetchToken(t, n1, "bob", "repository:team/app:pull")
	manifest := "/v2/team/app/manifests/v1"
	if !testnet.Eventually(10*time.Second, func() bool { return status(t, n3, manifest, aliceTok) == 200 }) {
		t.Fatalf("node 3 does not serve team/app:v1 with node 1's token: %d", status(t, n3, manifest, aliceTok))
	}
	if _, _, _, err := clientWith(n3, aliceTok).GetManifest(ctx, "team/app", "v1"); err != nil {
		t.Fatalf("pull from node 3 with node 1's token: %v", err)
	}
	for i, n := range nodes {
		if got := status(t, n, manifest, bobTok); got != 200 {
			t.Fatalf("node %d: bob's token answers %d, want 200", i+1, got)
		}
		// A token for another repository does not open this one.
		if got := status(t, n, "/v2/public/base/tags/list", aliceTok); got != 401 {
			t.Errorf("node %d: a token for team/app read public/base: %d, want 401", i+1, got)
		}
	}

	// bob leaves the htpasswd file: his token is refused everywhere.
	start := time.Now()
	writeHtpasswd(t, users, "alice")
	refusedEverywhere(t, nodes, manifest, bobTok, 401, start, "bob removed")

	// The policy no longer lets alice pull team/: her token is refused
	// everywhere (DENIED: a new token would not help).
	start = time.Now()
	narrowed := strings.Replace(authPolicy, `repos: ["team/**", "public/**", "secret/**"]`, `repos: ["public/**", "secret/**"]`, 1)
	if err := os.WriteFile(pol, []byte(narrowed), 0o600); err != nil {
		t.Fatal(err)
	}
	refusedEverywhere(t, nodes, manifest, aliceTok, 403, start, "policy narrowed")
}

// TestTokenFromAnExternalIssuer: a node set up like Distribution's
// auth.token (issuer, service, realm, root certificate bundle) accepts a
// token signed by the bundle's key, and refuses one signed by another key
// or naming another issuer.
func TestTokenFromAnExternalIssuer(t *testing.T) {
	t.Parallel()
	testnet.RequireProcess(t)
	iss := newTestIssuer(t, "auth.example", "registry.example")
	n := testnet.StartNode(t, testnet.Options{Args: []string{
		"--auth-token-realm", "https://auth.example/token", "--auth-token-service", "registry.example",
		"--auth-token-issuer", "auth.example", "--auth-token-rootcertbundle", iss.bundle}})
	ctx := context.Background()

	resp, err := http.Get(n.URL() + "/v2/ext/app/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("WWW-Authenticate"), `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:ext/app:pull"`; got != want {
		t.Errorf("challenge %s, want %s", got, want)
	}

	push := "Bearer " + iss.sign(t, iss.key, "auth.example", "repository:ext/app:pull,push")
	c := clientWith(n, push)
	cfg := []byte("{}")
	if _, err := c.PushBytes(ctx, "ext/app", cfg); err != nil {
		t.Fatalf("push with the external token: %v", err)
	}
	m := fmt.Sprint(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	if _, err := c.PutManifest(ctx, "ext/app", "v1", "application/vnd.oci.image.manifest.v1+json", []byte(m)); err != nil {
		t.Fatalf("manifest push with the external token: %v", err)
	}
	if got := status(t, n, "/v2/ext/app/manifests/v1", push); got != 200 {
		t.Errorf("pull with the external token: %d", got)
	}
	for name, tok := range map[string]string{
		"another key":    iss.sign(t, iss.rogue, "auth.example", "repository:ext/app:pull"),
		"another issuer": iss.sign(t, iss.key, "evil.example", "repository:ext/app:pull"),
	} {
		if got := status(t, n, "/v2/ext/app/manifests/v1", "Bearer "+tok); got != 401 {
			t.Errorf("%s: answered %d, want 401", name, got)
		}
	}
	for _, reason := range []string{"signature", "issuer"} {
		if v, err := n.Metric(ctx, "meshreg_auth_token_verification_failures_total", `reason="`+reason+`"`); err != nil || v != 1 {
			t.Errorf("%s failures = %v, %v; want 1", reason, v, err)
		}
	}
}

// TestDockerLoginPushPull: the Docker engine against a node with an
// htpasswd file: `docker login` (through the token service), then push and
// pull of an image built FROM scratch, all with Bearer tokens, in a
// throwaway DOCKER_CONFIG; `docker logout` after.
func TestDockerLoginPushPull(t *testing.T) {
	t.Parallel()
	docker := requireDocker(t)
	testnet.RequireProcess(t)
	work := t.TempDir()
	users, pol := filepath.Join(work, "htpasswd"), filepath.Join(work, "policy.yaml")
	writeHtpasswd(t, users, "alice", "bob")
	if err := os.WriteFile(pol, []byte(authPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnet.StartNode(t, testnet.Options{Args: []string{"--auth-htpasswd", users, "--auth-policy", pol}})
	fetchToken(t, n, "") // the node has its signing key
	config := filepath.Join(work, "docker-config")
	r := testnet.Runner{T: t, Path: docker, Dir: t.TempDir(), Env: []string{"DOCKER_CONFIG=" + config}}

	// A wrong password is refused at login.
	if res := dockerLogin(t, r, n.Host(), "alice", "wrong"); res.Err == nil {
		t.Fatalf("docker login with a wrong password succeeded:\n%s", res.Stdout)
	}
	issued := metric(t, n, "meshreg_auth_tokens_issued_total")
	if res := dockerLogin(t, r, n.Host(), "alice", "alice-pw"); res.Err != nil {
		t.Fatalf("docker login: %v\n%s", res.Err, res.Stderr)
	}
	t.Cleanup(func() { // even when the test fails half-way
		c := exec.Command(docker, "logout", n.Host())
		c.Env = append(os.Environ(), r.Env...)
		_ = c.Run()
	})
	if cfg, err := os.ReadFile(filepath.Join(config, "config.json")); err != nil || !strings.Contains(string(cfg), n.Host()) {
		t.Fatalf("docker login wrote no credentials for %s in the throwaway config: %v\n%s", n.Host(), err, cfg)
	}
	if after := metric(t, n, "meshreg_auth_tokens_issued_total"); after <= issued {
		t.Errorf("docker login did not go through the token service (tokens issued %v before, %v after)", issued, after)
	}

	issued = metric(t, n, "meshreg_auth_tokens_issued_total")
	dockerRoundTripIn(t, r, "public/hello", n, n) // public: the round trip checks the manifest anonymously
	if after := metric(t, n, "meshreg_auth_tokens_issued_total"); after <= issued {
		t.Errorf("docker push and pull did not go through the token service (tokens issued %v before, %v after)", issued, after)
	}
	r.Run("logout", n.Host())
	if cfg, _ := os.ReadFile(filepath.Join(config, "config.json")); strings.Contains(string(cfg), n.Host()) {
		t.Errorf("docker logout left credentials for %s:\n%s", n.Host(), cfg)
	}
}

// dockerLogin runs `docker login HOST -u user --password-stdin`.
func dockerLogin(t *testing.T, r testnet.Runner, host, user, password string) testnet.CmdResult {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), r.Path, "login", host, "-u", user, "--password-stdin")
	cmd.Env = append(os.Environ(), r.Env...)
	cmd.Stdin = strings.NewReader(password + "\n")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("$ docker login %s -u %s --password-stdin  [%v]", host, user, err)
	return testnet.CmdResult{Stdout: []byte(stdout.String()), Stderr: []byte(stderr.String()), Err: err}
}
