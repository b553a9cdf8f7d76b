package testnet_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/distribution"
)

const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// mirrorGet is one plain HTTP request, as containerd sends it to a mirror
// host (crane cannot send ?ns=).
type mirrorAnswer struct {
	status  int
	header  http.Header
	body    string
	errCode string
	errMsg  string
}

func mirrorGet(t *testing.T, method, url, user string) mirrorAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", manifestAccept)
	if user != "" {
		req.SetBasicAuth(user, user+"-pw")
	}
	client := &http.Client{Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	a := mirrorAnswer{status: resp.StatusCode, header: resp.Header, body: string(b)}
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if resp.StatusCode >= 400 && json.Unmarshal(b, &e) == nil && len(e.Errors) > 0 {
		a.errCode, a.errMsg = e.Errors[0].Code, e.Errors[0].Message
	}
	return a
}

// pushUpstreamImage pushes a two-platform index (linux/amd64 and
// linux/arm64, two layers each) to repo:tag of the upstream and returns
// its digest.
func pushUpstreamImage(t *testing.T, up testnet.Runner, host, repo, tag, seed string) digest.Digest {
	t.Helper()
	var refs []string
	for _, arch := range []string{"amd64", "arm64"} {
		var files []string
		for i := range 2 {
			path := filepath.Join(up.Dir, fmt.Sprintf("%s-%s-%d.tar", seed, arch, i))
			if _, err := testnet.WriteLayerTar(path, fmt.Sprintf("%s-%s-%d", seed, arch, i), 2, 96<<10); err != nil {
				t.Fatal(err)
			}
			files = append(files, "-f", path)
		}
		ref := fmt.Sprintf("%s/%s:%s-%s", host, repo, seed, arch)
		up.Run(append([]string{"append", "--insecure", "--oci-empty-base", "-t", ref}, files...)...)
		up.Run("mutate", "--insecure", "--set-platform", "linux/"+arch, "-t", ref, ref)
		refs = append(refs, "-m", ref)
	}
	up.Run(append([]string{"index", "append", "--insecure", "-t", host + "/" + repo + ":" + tag}, refs...)...)
	return digest.Digest(strings.TrimSpace(string(up.Run("digest", "--insecure", host+"/"+repo+":"+tag))))
}

func dockerConfigAuth(t *testing.T, path, host, user, pass string) string {
	t.Helper()
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMirrorUpstream: three nodes mirror a CNCF Distribution v3 upstream
// that needs credentials, with access control on. Through node 2 an image
// (two platforms, two layers each) pulls with crane by the explicit
// <ns>/<repo> form and with plain ?ns= requests, with the upstream's
// digest. With the upstream stopped, the cached tag pulls through every
// node with the stale Warning, and a tag never pulled answers an error
// naming the upstream. Started again with the tag moved, every node serves
// the new digest within the revalidation interval. A client without pull
// rights on the mirror's namespace reads nothing through any node; an ns
// that is not configured is refused; nodes with wrong or no credentials
// answer an error naming the upstream and --upstream-credentials.
func TestMirrorUpstream(t *testing.T) {
	t.Parallel()
	testnet.RequireProcess(t)
	work := t.TempDir()
	upstream, err := distribution.Start(t.Context(), distribution.Options{Dir: filepath.Join(work, "upstream"), Users: map[string]string{"up": "up-pw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(upstream.Stop)
	crane := testnet.Tool(t, "crane")
	home := filepath.Join(work, "home-up")
	if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	up := testnet.Runner{T: t, Path: crane, Dir: work, Env: []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}}
	up.Run("auth", "login", upstream.Addr, "-u", "up", "-p", "up-pw")
	v1 := pushUpstreamImage(t, up, upstream.Addr, "team/app", "v1", "one")

	name := upstream.Addr                             // 127.0.0.1:PORT, what clients call the upstream
	ns := strings.ReplaceAll(upstream.Addr, ":", "-") // the mirror's namespace in repository names
	creds := dockerConfigAuth(t, filepath.Join(work, "upstream-auth.json"), name, "up", "up-pw")
	users, pol := filepath.Join(work, "htpasswd"), filepath.Join(work, "policy.yaml")
	writeHtpasswd(t, users, "alice", "bob")
	policy := fmt.Sprintf("rules:\n  - users: [alice]\n    repos: [%q]\n    allow: [pull]\n  - users: [bob]\n    repos: [\"team/**\"]\n    allow: [pull, push]\n", ns+"/**")
	if err := os.WriteFile(pol, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	const revalidate = 2 * time.Second
	nodes := testnet.StartCluster(t, 3, testnet.Options{Args: []string{
		"--cluster-key", writeClusterKey(t),
		"--upstream", fmt.Sprintf("%s=%s;revalidate=%s", name, upstream.URL, revalidate), "--upstream-credentials", creds,
		"--auth-htpasswd", users, "--auth-policy", pol,
	}})
	node2 := nodes[1]
	tagURL := func(n *testnet.Node, tag string) string {
		return n.URL() + "/v2/team/app/manifests/" + tag + "?ns=" + name
	}

	// Through node 2 with ?ns=: the upstream's digest; the index's
	// children and their blobs too.
	a := mirrorGet(t, "GET", tagURL(node2, "v1"), "alice")
	if a.status != 200 || digest.FromString(a.body) != v1 || a.header.Get("Docker-Content-Digest") != v1.String() || a.header.Get("Warning") != "" {
		t.Fatalf("GET v1 with ns through node 2: %d %s (Warning %q), digest %s; want 200 with %s", a.status, a.errMsg, a.header.Get("Warning"), digest.FromString(a.body), v1)
	}
	var index struct {
		Manifests []struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal([]byte(a.body), &index); err != nil || len(index.Manifests) != 2 {
		t.Fatalf("index: %v (%s)", err, a.body)
	}
	child := index.Manifests[0].Digest
	c := mirrorGet(t, "GET", tagURL(node2, child.String()), "alice")
	var img struct {
		Config struct{ Digest digest.Digest }
		Layers []struct{ Digest digest.Digest }
	}
	if c.status != 200 || digest.FromString(c.body) != child || json.Unmarshal([]byte(c.body), &img) != nil || len(img.Layers) != 2 {
		t.Fatalf("child manifest %s with ns: %d %s", child, c.status, c.errMsg)
	}
	b := mirrorGet(t, "GET", node2.URL()+"/v2/team/app/blobs/"+img.Layers[1].Digest.String()+"?ns="+name, "alice")
	if b.status != 200 || digest.FromString(b.body) != img.Layers[1].Digest {
		t.Fatalf("layer through node 2 with ns: %d %s", b.status, b.errMsg)
	}

	// crane through node 2 by the explicit form: the whole index, both
	// platforms, every layer verified by crane.
	alice := testnet.Runner{T: t, Path: crane, Dir: work, Env: []string{"HOME=" + work, "DOCKER_CONFIG=" + filepath.Join(work, "alice-docker")}}
	alice.Run("auth", "login", node2.Host(), "-u", "alice", "-p", "alice-pw")
	ref := node2.Host() + "/" + ns + "/team/app:v1"
	if got := digest.Digest(strings.TrimSpace(string(alice.Run("digest", "--insecure", ref)))); got != v1 {
		t.Fatalf("crane digest %s = %s, want the upstream's %s", ref, got, v1)
	}
	alice.Run("pull", "--insecure", "--format", "oci", ref, filepath.Join(work, "pulled-v1"))
	// The layer read twice through node 2 crossed from the upstream once.
	if n := settledCount(t, 1, func() (int, error) { return upstream.BlobGETs(img.Layers[1].Digest, 200) }); n != 1 {
		t.Errorf("the upstream served layer %s %d times, want once", img.Layers[1].Digest, n)
	}

	// The upstream's answers are counted by status (the leader asked it).
	resolved := 0.0
	for _, n := range nodes {
		v, _ := n.Metric(t.Context(), "meshreg_mirror_upstream_responses_total", `op="resolve"`, `status="200"`, `upstream="`+name+`"`)
		resolved += v
	}
	if resolved < 1 {
		t.Errorf("no node counted a 200 answer to a resolve from the upstream")
	}

	// The status document shows the upstream and its last success.
	st := mirrorGet(t, "GET", node2.URL()+"/_meshreg/v1/status", "")
	var status struct {
		Upstreams []struct {
			Name, URL   string
			LastSuccess time.Time `json:"last_success"`
		}
	}
	if err := json.Unmarshal([]byte(st.body), &status); err != nil || len(status.Upstreams) != 1 ||
		status.Upstreams[0].Name != name || status.Upstreams[0].URL != upstream.URL || status.Upstreams[0].LastSuccess.IsZero() {
		t.Errorf("status upstreams of node 2: %+v (%v)", status.Upstreams, err)
	}

	// Refusals: an ns that is no upstream; a client without pull on the
	// mirror's namespace, through every node (bob may pull team/**, which
	// is the cluster's own team/app, not the mirror's).
	if a := mirrorGet(t, "GET", node2.URL()+"/v2/team/app/manifests/v1?ns=evil.example", "alice"); a.status != 404 || a.errCode != "NAME_UNKNOWN" || !strings.Contains(a.errMsg, name) {
		t.Errorf("unconfigured ns: %d %s %q, want 404 NAME_UNKNOWN naming the configured upstream", a.status, a.errCode, a.errMsg)
	}
	for i, n := range nodes {
		for _, u := range []string{"bob", ""} {
			if a := mirrorGet(t, "GET", tagURL(n, v1.String()), u); a.status != 403 && a.status != 401 {
				t.Errorf("node %d: %q reading the mirrored manifest: %d, want 401/403", i+1, u, a.status)
			}
			if a := mirrorGet(t, "GET", n.URL()+"/v2/"+ns+"/team/app/blobs/"+img.Layers[1].Digest.String(), u); a.status != 403 && a.status != 401 {
				t.Errorf("node %d: %q reading a mirrored blob by the explicit form: %d, want 401/403", i+1, u, a.status)
			}
		}
	}

	// Upstream stopped: the cached tag still pulls through every node,
	// with the stale Warning, once the interval is over.
	upstream.Stop()
	time.Sleep(revalidate + 500*time.Millisecond)
	for i, n := range nodes {
		a := mirrorGet(t, "GET", tagURL(n, "v1"), "alice")
		if a.status != 200 || digest.FromString(a.body) != v1 || !strings.HasPrefix(a.header.Get("Warning"), `110 - "stale: upstream `+name+` unreachable`) {
			t.Errorf("node %d with the upstream down: %d %s, Warning %q; want v1 with the stale Warning", i+1, a.status, a.errMsg, a.header.Get("Warning"))
		}
		cr := testnet.Runner{T: t, Path: crane, Dir: work, Env: []string{"HOME=" + work, "DOCKER_CONFIG=" + filepath.Join(work, fmt.Sprintf("alice-docker-%d", i))}}
		cr.Run("auth", "login", n.Host(), "-u", "alice", "-p", "alice-pw")
		cr.Run("pull", "--insecure", "--platform", "linux/amd64", n.Host()+"/"+ns+"/team/app:v1", filepath.Join(work, fmt.Sprintf("stale-%d.tar", i)))
	}
	if a := mirrorGet(t, "GET", tagURL(nodes[2], "never"), "alice"); a.status != 503 || !strings.Contains(a.errMsg, "upstream "+name) {
		t.Errorf("a tag never pulled, upstream down: %d %s %q; want 503 naming the upstream", a.status, a.errCode, a.errMsg)
	}

	// Upstream back with the tag moved: every node picks it up within the
	// interval (plus the time a failure is remembered).
	if err := upstream.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	v2 := pushUpstreamImage(t, up, upstream.Addr, "team/app", "v1", "two")
	if v2 == v1 {
		t.Fatal("the tag did not move upstream")
	}
	start := time.Now()
	for i, n := range nodes {
		if !testnet.Eventually(2*revalidate+2*time.Second, func() bool {
			a := mirrorGet(t, "GET", tagURL(n, "v1"), "alice")
			return a.status == 200 && digest.FromString(a.body) == v2 && a.header.Get("Warning") == ""
		}) {
			t.Errorf("node %d still does not serve the moved tag %s after %s", i+1, v2, time.Since(start).Round(time.Millisecond))
		}
	}
	t.Logf("moved tag picked up by every node %s after the upstream returned", time.Since(start).Round(time.Millisecond))
	// Revalidation is once per cluster: nine pulls through the three nodes
	// at once, after the interval, make one HEAD upstream.
	heads := func() int {
		reqs, err := upstream.Requests()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range reqs {
			if r.Method == "HEAD" && strings.HasPrefix(r.Path, "/v2/team/app/manifests/v1") && r.Status == 200 {
				n++
			}
		}
		return n
	}
	time.Sleep(revalidate + 200*time.Millisecond)
	before := heads()
	var wg sync.WaitGroup
	for range 3 {
		for _, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if a := mirrorGet(t, "GET", tagURL(n, "v1"), "alice"); a.status != 200 || digest.FromString(a.body) != v2 {
					t.Errorf("concurrent pull through %s: %d %s", n.Host(), a.status, a.errMsg)
				}
			}()
		}
	}
	wg.Wait()
	if got := settledCount(t, 1, func() (int, error) { return heads() - before, nil }); got != 1 {
		t.Errorf("9 concurrent pulls of a stale tag through 3 nodes made %d HEADs upstream, want 1", got)
	}

	// The three nodes pull the moved image's layers at once: the upstream
	// served each blob once (its access log says; a 401 that asked a node
	// new to it for its credentials carries no blob), every node got it
	// whole.
	var v2index struct {
		Manifests []struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal([]byte(mirrorGet(t, "GET", tagURL(node2, "v1"), "alice").body), &v2index); err != nil || len(v2index.Manifests) == 0 {
		t.Fatalf("moved index: %v", err)
	}
	var v2img struct {
		Config struct{ Digest digest.Digest }
		Layers []struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal([]byte(mirrorGet(t, "GET", tagURL(node2, v2index.Manifests[0].Digest.String()), "alice").body), &v2img); err != nil || len(v2img.Layers) == 0 {
		t.Fatalf("moved image manifest: %v", err)
	}
	blobs := []digest.Digest{v2img.Config.Digest}
	for _, l := range v2img.Layers {
		blobs = append(blobs, l.Digest)
	}
	gets := map[digest.Digest]int{} // crane read the config when it pushed the index
	for _, d := range blobs {
		if gets[d], err = upstream.BlobGETs(d, 200); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range blobs {
		for _, n := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if a := mirrorGet(t, "GET", n.URL()+"/v2/team/app/blobs/"+d.String()+"?ns="+name, "alice"); a.status != 200 || digest.FromString(a.body) != d {
					t.Errorf("blob %s through %s at once: %d %s", d, n.Host(), a.status, a.errMsg)
				}
			}()
		}
	}
	wg.Wait()
	for _, d := range blobs {
		if n := settledCount(t, 1, func() (int, error) { n, err := upstream.BlobGETs(d, 200); return n - gets[d], err }); n != 1 {
			t.Errorf("three nodes pulling blob %s at once: the upstream served it %d times, want once", d, n)
		}
	}

	// (The failure to ask for it while the upstream was down is remembered
	// for a moment: a down upstream costs one attempt, not one per pull.)
	var never mirrorAnswer
	if !testnet.Eventually(10*time.Second, func() bool {
		never = mirrorGet(t, "GET", tagURL(node2, "never"), "alice")
		return never.status != 503
	}) || never.status != 404 || never.errCode != "MANIFEST_UNKNOWN" || !strings.Contains(never.errMsg, "not in upstream "+name) {
		t.Errorf("a tag the upstream does not have: %d %s %q; want 404 MANIFEST_UNKNOWN naming the upstream", never.status, never.errCode, never.errMsg)
	}

	// Wrong and missing credentials: a clear error naming the upstream.
	wrong := dockerConfigAuth(t, filepath.Join(work, "wrong-auth.json"), name, "up", "nope")
	for what, args := range map[string][]string{
		"wrong credentials":   {"--upstream-credentials", wrong},
		"missing credentials": nil,
	} {
		n := testnet.StartNode(t, testnet.Options{Args: append([]string{"--upstream", name + "=" + upstream.URL}, args...)})
		a := mirrorGet(t, "GET", n.URL()+"/v2/team/app/manifests/v1?ns="+name, "")
		if a.status != 502 || !strings.Contains(a.errMsg, "upstream "+name) || !strings.Contains(a.errMsg, "--upstream-credentials") {
			t.Errorf("%s: %d %s %q; want 502 naming the upstream and --upstream-credentials", what, a.status, a.errCode, a.errMsg)
		}
		// Credentials with authentication off: one WARN says who can read.
		logs, err := os.ReadFile(n.LogPath())
		warned := strings.Count(string(logs), "upstream credentials are configured but authentication is off")
		if err != nil || (args != nil) != (warned == 1) {
			t.Errorf("%s: %d WARN lines about credentials without authentication (%v)", what, warned, err)
		}
	}
}

// settledCount reads a count from the upstream's access log, which the
// registry writes after its answer has gone out: it waits (at most 5 s)
// until the count reaches want, then a moment more for lines that would
// make it too high, and returns it.
func settledCount(t *testing.T, want int, count func() (int, error)) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := count()
		if err != nil {
			t.Fatal(err)
		}
		if n >= want || time.Now().After(deadline) {
			time.Sleep(300 * time.Millisecond)
			if n, err = count(); err != nil {
				t.Fatal(err)
			}
			return n
		}
		time.Sleep(50 * time.Millisecond)
	}
}
