package testnet_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/testnet"
)

// TestPoliciesThroughEveryNode: a content policy set through one node
// (`meshreg policy set`) is enforced alike through every node of a 3-node
// cluster:
//   - immutable tags: moving v1 to another image through node 2 is refused
//     with the OCI error docker would print (403 DENIED, the rule named),
//     and crane fails with that message; the same digest again is fine;
//     deleting the tag or its manifest through node 3 is refused;
//   - quotas: pushes within the quota through node 3 succeed, the one past
//     it is refused (DENIED, usage and limit in the message, crane too),
//     and every node reports the same usage, equal to the bytes pushed;
//   - retention: with keepLast 2 for ci-* tags, `meshreg gc --dry-run`
//     lists exactly the two oldest ci tags, and `meshreg gc --grace 0s`
//     deletes exactly them on every node (other tags stay).
func TestPoliciesThroughEveryNode(t *testing.T) {
	testnet.RequireProcess(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	testnet.Leader(t, nodes, 10*time.Second)
	work := t.TempDir()
	meshreg := testnet.Runner{T: t, Path: testnet.Binary(t), Dir: work}
	crane := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: work}
	immRepo, quotaRepo, ciRepo := testnet.UniqueRepo("e2e/imm"), testnet.UniqueRepo("e2e/quota"), testnet.UniqueRepo("e2e/ci")
	const quota = 3 << 20

	// A wrong key is refused with its line before anything is sent.
	bad := filepath.Join(work, "bad.yaml")
	writeFile(t, bad, []byte("rules:\n  - repositories: [e2e/**]\n    retention:\n      keeplast: 2\n"))
	if res := meshreg.Try("policy", "set", "--file", bad, "--node", nodes[0].URL()); res.Err == nil ||
		!strings.Contains(string(res.Stderr), `line 4: rule 1: retention: unknown key "keeplast" (did you mean keepLast?)`) {
		t.Errorf("a policy with a misspelt key: err %v, stderr %s", res.Err, res.Stderr)
	}
	// So is one sent straight to the endpoint, by the node.
	resp, err := http.DefaultClient.Do(mustRequest(t, http.MethodPut, nodes[1].URL()+"/_meshreg/v1/policy",
		"rules:\n  - repositories: [e2e/**]\n    qouta: 1GiB\n"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantOCIError(t, "a bad policy PUT", resp.StatusCode, body, http.StatusBadRequest, "UNSUPPORTED",
		`line 3: rule 1: unknown key "qouta" (did you mean quota?)`)
	doc := fmt.Sprintf(`rules:
  - repositories: [e2e/imm-*]
    immutable:
      tags: ["v*"]
  - repositories: [e2e/quota-*]
    quota: %d
  - repositories: [e2e/ci-*]
    retention:
      tags: ["ci-*"]
      keepLast: 2
`, quota)
	file := filepath.Join(work, "policy.yaml")
	writeFile(t, file, []byte(doc))
	meshreg.Run("policy", "set", "--file", file, "--node", nodes[0].URL())
	for _, n := range nodes {
		if got := waitPolicy(t, meshreg, n, doc); got != doc {
			t.Errorf("policy show through %s:\n%s\nwant\n%s", n.URL(), got, doc)
		}
	}

	t.Run("immutable tags", func(t *testing.T) {
		c1, c2, c3 := testnet.NewClient(nodes[0].URL()), testnet.NewClient(nodes[1].URL()), testnet.NewClient(nodes[2].URL())
		one := newGCImage(immRepo, []byte(`{"architecture":"amd64","os":"linux","i":1}`), testnet.RandomBytes(4096))
		two := newGCImage(immRepo, []byte(`{"architecture":"amd64","os":"linux","i":2}`), testnet.RandomBytes(4096))
		one.pushBlobs(t, c1)
		if err := one.putManifest(c1); err != nil { // as v1
			t.Fatal(err)
		}
		two.pushBlobs(t, c2)
		want := fmt.Sprintf("tag v1 of %s is immutable (policy rule 1)", immRepo)
		err := two.putManifest(c2)
		wantRefused(t, "moving v1 through node 2", err, http.StatusForbidden, "DENIED", want, "push a new tag")
		// crane, tagging the second image (pushed by digest) v1, sees the
		// same message.
		if _, err := c2.PutManifest(t.Context(), immRepo, two.digest.String(), ocispec.MediaTypeImageManifest, two.manifest); err != nil {
			t.Fatal(err)
		}
		res := crane.Try("tag", "--insecure", nodes[1].Host()+"/"+immRepo+"@"+two.digest.String(), "v1")
		t.Logf("crane tag moving v1: %s", res.Stderr)
		if res.Err == nil || !strings.Contains(string(res.Stderr), want) || !strings.Contains(string(res.Stderr), "DENIED") {
			t.Errorf("crane tag moving v1: err %v, stderr %s", res.Err, res.Stderr)
		}
		// The same digest again is fine, through any node; another tag too.
		if err := one.putManifest(c2); err != nil {
			t.Errorf("pushing v1's own digest again through node 2: %v", err)
		}
		if _, err := c2.PutManifest(t.Context(), immRepo, "latest", ocispec.MediaTypeImageManifest, two.manifest); err != nil {
			t.Errorf("a mutable tag: %v", err)
		}
		// Deleting the tag or its manifest through node 3 is refused.
		wantRefused(t, "deleting v1 through node 3", deleteAnswer(t, nodes[2], immRepo, "v1"),
			http.StatusForbidden, "DENIED", want+": it cannot be deleted")
		wantRefused(t, "deleting v1's manifest through node 3", deleteAnswer(t, nodes[2], immRepo, one.digest.String()),
			http.StatusForbidden, "DENIED", "is tagged v1, an immutable tag (policy rule 1)")
		for _, c := range []*testnet.Client{c1, c2, c3} {
			body, _, _, err := c.GetManifest(t.Context(), immRepo, "v1")
			if err != nil || digest.FromBytes(body) != one.digest {
				t.Errorf("v1 through %s: %v, want the first image", c.Base, err)
			}
		}

		// Two pushes of a new immutable tag racing through two nodes: the
		// log orders them, exactly one wins, every node agrees on which.
		errs := make(chan error, 2)
		go func() {
			_, err := c1.PutManifest(t.Context(), immRepo, "v2", ocispec.MediaTypeImageManifest, one.manifest)
			errs <- err
		}()
		go func() {
			_, err := c3.PutManifest(t.Context(), immRepo, "v2", ocispec.MediaTypeImageManifest, two.manifest)
			errs <- err
		}()
		var refused []error
		for range 2 {
			if err := <-errs; err != nil {
				refused = append(refused, err)
			}
		}
		if len(refused) != 1 {
			t.Fatalf("racing pushes of v2: %d refused (%v), want exactly one", len(refused), refused)
		}
		wantRefused(t, "the racing push that lost", refused[0], http.StatusForbidden, "DENIED", "tag v2 of "+immRepo+" is immutable")
		var won digest.Digest
		for _, c := range []*testnet.Client{c1, c2, c3} {
			body, _, _, err := c.GetManifest(t.Context(), immRepo, "v2")
			if err != nil {
				t.Fatalf("v2 through %s: %v", c.Base, err)
			}
			if d := digest.FromBytes(body); won == "" {
				won = d
			} else if d != won {
				t.Errorf("v2 through %s is %s, through another node %s", c.Base, d, won)
			}
		}
	})

	t.Run("quota", func(t *testing.T) {
		c3 := testnet.NewClient(nodes[2].URL())
		var pushed int64
		for i := range 2 {
			img := newGCImage(quotaRepo, []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","q":%d}`, i)), testnet.RandomBytes(1<<20))
			img.pushBlobs(t, c3)
			if _, err := c3.PutManifest(t.Context(), quotaRepo, fmt.Sprintf("q%d", i), ocispec.MediaTypeImageManifest, img.manifest); err != nil {
				t.Fatalf("push %d within the quota: %v", i, err)
			}
			pushed += int64(len(img.manifest))
			for _, b := range img.blobs {
				pushed += int64(len(b))
			}
		}
		over := newGCImage(quotaRepo, []byte(`{"architecture":"amd64","os":"linux","q":"over"}`), testnet.RandomBytes(3<<19))
		over.pushBlobs(t, c3)
		_, err := c3.PutManifest(t.Context(), quotaRepo, "over", ocispec.MediaTypeImageManifest, over.manifest)
		wantRefused(t, "a push past the quota through node 3", err, http.StatusForbidden, "DENIED",
			fmt.Sprintf("repository %s is over its quota with this manifest: it holds %d bytes", quotaRepo, pushed),
			fmt.Sprintf("the quota is %d (policy rule 2)", quota))
		// crane, pushing a bigger image, is told the same.
		layer := filepath.Join(work, "big.tar")
		if _, err := testnet.WriteLayerTar(layer, "big", 2, 1<<20); err != nil {
			t.Fatal(err)
		}
		res := crane.Try("append", "--insecure", "--oci-empty-base", "-f", layer, "-t", nodes[2].Host()+"/"+quotaRepo+":big")
		t.Logf("crane append past the quota: %s", res.Stderr)
		if res.Err == nil || !strings.Contains(string(res.Stderr), "DENIED") || !strings.Contains(string(res.Stderr), "over its quota") {
			t.Errorf("crane append past the quota: err %v, stderr %s", res.Err, res.Stderr)
		}
		for _, n := range nodes {
			if got := usageOf(t, n, quotaRepo); got.Bytes != pushed || got.Quota != quota || got.Rule != 2 {
				t.Errorf("usage through %s = %+v, want %d bytes of a %d quota (rule 2)", n.URL(), got, pushed, quota)
			}
		}
		_, _, metrics, err := c3.Get(t.Context(), "/metrics", nil)
		if want := fmt.Sprintf(`meshreg_repository_usage_bytes{repository=%q} %s`, quotaRepo, strconv.FormatFloat(float64(pushed), 'g', -1, 64)); err != nil || !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s (%v)", want, err)
		}
	})

	t.Run("retention", func(t *testing.T) {
		c1, c2 := testnet.NewClient(nodes[0].URL()), testnet.NewClient(nodes[1].URL())
		for i, c := range []*testnet.Client{c1, c2, c1, c2} { // pushed in order ci-1 .. ci-4
			img := newGCImage(ciRepo, []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","ci":%d}`, i)), testnet.RandomBytes(4096))
			img.pushBlobs(t, c)
			if _, err := c.PutManifest(t.Context(), ciRepo, fmt.Sprintf("ci-%d", i+1), ocispec.MediaTypeImageManifest, img.manifest); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				if _, err := c.PutManifest(t.Context(), ciRepo, "stable", ocispec.MediaTypeImageManifest, img.manifest); err != nil {
					t.Fatal(err)
				}
			}
		}
		wantGone := []string{ciRepo + ":ci-1", ciRepo + ":ci-2"}
		dry := string(meshreg.Run("gc", "--dry-run", "--grace", "0s", "--node", nodes[1].URL()))
		if got := retentionLines(dry, "would delete"); !slices.Equal(got, wantGone) {
			t.Errorf("the dry run lists %v, want %v:\n%s", got, wantGone, dry)
		}
		out := string(meshreg.Run("gc", "--grace", "0s", "--node", nodes[1].URL()))
		if got := retentionLines(out, "deleted"); !slices.Equal(got, wantGone) {
			t.Errorf("meshreg gc deleted %v, want %v:\n%s", got, wantGone, out)
		}
		for _, n := range nodes {
			if tags := tagsOf(t, n, ciRepo); !slices.Equal(tags, []string{"ci-3", "ci-4", "stable"}) {
				t.Errorf("tags through %s after gc: %v, want ci-3 ci-4 stable", n.URL(), tags)
			}
			if tags := tagsOf(t, n, immRepo); !slices.Contains(tags, "v1") {
				t.Errorf("tags of %s through %s: %v: retention touched a repository no rule of it governs", immRepo, n.URL(), tags)
			}
		}
	})
}

// waitPolicy is `meshreg policy show` through n once it shows want (the
// node reads after catching up; a few tries cover an election).
func waitPolicy(t *testing.T, meshreg testnet.Runner, n *testnet.Node, want string) string {
	t.Helper()
	var got string
	for range 20 {
		if res := meshreg.Try("policy", "show", "--node", n.URL()); res.Err == nil {
			if got = string(res.Stdout); got == want {
				break
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return got
}

// wantRefused checks the answer a docker client would print: the status
// and the spec's {"errors":[{"code","message"}]} with the message parts.
func wantRefused(t *testing.T, what string, err error, status int, code string, msg ...string) {
	t.Helper()
	var he *testnet.HTTPError
	if !errors.As(err, &he) {
		t.Errorf("%s: %v, want HTTP %d %s", what, err, status, code)
		return
	}
	wantOCIError(t, what, he.Status, []byte(he.Body), status, code, msg...)
}

// deleteAnswer deletes a manifest or tag through n; a refusal is an
// *testnet.HTTPError with the body.
func deleteAnswer(t *testing.T, n *testnet.Node, repo, ref string) error {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, n.URL()+"/v2/"+repo+"/manifests/"+ref, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusAccepted {
		return nil
	}
	return &testnet.HTTPError{Method: req.Method, URL: req.URL.String(), Want: []int{http.StatusAccepted}, Status: resp.StatusCode, Body: string(b)}
}

func usageOf(t *testing.T, n *testnet.Node, repo string) api.RepoUsage {
	t.Helper()
	_, _, body, err := testnet.NewClient(n.URL()).Get(t.Context(), "/_meshreg/v1/policy/usage", nil)
	if err != nil {
		t.Fatalf("usage through %s: %v", n.URL(), err)
	}
	var u api.PolicyUsage
	if err := json.Unmarshal(body, &u); err != nil {
		t.Fatalf("usage through %s: %v: %s", n.URL(), err, body)
	}
	for _, r := range u.Repositories {
		if r.Repo == repo {
			return r
		}
	}
	return api.RepoUsage{}
}

func tagsOf(t *testing.T, n *testnet.Node, repo string) []string {
	t.Helper()
	_, _, body, err := testnet.NewClient(n.URL()).Get(t.Context(), "/v2/"+repo+"/tags/list", nil)
	if err != nil {
		t.Fatalf("tags of %s through %s: %v", repo, n.URL(), err)
	}
	var l struct{ Tags []string }
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	return l.Tags
}

// retentionLines are the REPO:TAG of the "retention VERB tag" lines.
func retentionLines(out, verb string) []string {
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "retention "+verb+" tag "); ok {
			got = append(got, strings.Fields(rest)[0])
		}
	}
	slices.Sort(got)
	return got
}

func mustRequest(t *testing.T, method, url, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}
