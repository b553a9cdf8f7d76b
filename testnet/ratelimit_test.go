package testnet_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/testnet"
)

// TestRateLimitsProcess: a meshreg process with --rate-limits. crane
// pushes and pulls under the client limit; a burst past a repository's
// limit gets 429 with Retry-After naming the repository, while other
// repositories and the probes are served; the metric counts it.
func TestRateLimitsProcess(t *testing.T) {
	t.Parallel()
	testnet.RequireProcess(t)
	work := t.TempDir()
	limits := filepath.Join(work, "rate-limits.yaml")
	if err := os.WriteFile(limits, []byte(`clients: {requests-per-second: 100, burst: 1000}
repositories: [{repos: ["ci/**"], requests-per-second: 0.01, burst: 5}]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnet.StartNode(t, testnet.Options{Args: []string{"--rate-limits", limits}})
	crane := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: work, Env: []string{"HOME=" + work}}
	layer := filepath.Join(work, "layer.tar")
	if _, err := testnet.WriteLayerTar(layer, "l", 2, 64<<10); err != nil {
		t.Fatal(err)
	}
	crane.Run("append", "--insecure", "--oci-empty-base", "-t", n.Host()+"/team/app:v1", "-f", layer)
	crane.Run("pull", "--insecure", "--format", "oci", n.Host()+"/team/app:v1", filepath.Join(work, "pulled"))

	get := func(path string) (int, http.Header, string) {
		t.Helper()
		resp, err := n.HTTPClient().Get(n.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for i := range 5 {
		if code, _, body := get("/v2/ci/app/tags/list"); code != 404 {
			t.Fatalf("request %d to ci/app: %d %s, want 404 within the burst", i, code, body)
		}
	}
	code, hdr, body := get("/v2/ci/app/tags/list")
	if code != 429 || !strings.Contains(body, "TOOMANYREQUESTS") || !strings.Contains(body, "repository ci/app") {
		t.Fatalf("6th request to ci/app: %d %s, want 429 TOOMANYREQUESTS naming the repository", code, body)
	}
	if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q, want whole seconds >= 1", hdr.Get("Retry-After"))
	}
	if code, _, body := get("/v2/team/app/tags/list"); code != 200 {
		t.Fatalf("team/app after ci/app's limit: %d %s", code, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, _, body := get(p); code != 200 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	v, err := n.Metric(context.Background(), "meshreg_rate_limited_total", `limit="repository"`)
	if err != nil || v != 1 {
		t.Fatalf("meshreg_rate_limited_total{limit=\"repository\"} = %v, %v; want 1", v, err)
	}
}
