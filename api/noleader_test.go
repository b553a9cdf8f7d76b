package api_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// TestMissWithoutLeaderIs503: a node of a cluster with no leader (it waits
// to join) cannot tell whether it lacks a tag or a blob: it answers 503
// UNAVAILABLE with a Retry-After and a message, within the read's bound,
// never 404.
func TestMissWithoutLeaderIs503(t *testing.T) {
	t.Parallel()
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.Join = []string{"http://127.0.0.1:1"} // never contacted: the node does not Run
	log := tlog.Logger(t, slog.LevelWarn)
	n, err := node.Open(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	h, err := api.New(api.DefaultConfig(), n, n, api.NewMetrics(prometheus.NewRegistry()), log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for name, path := range map[string]string{
		"tag":  "/v2/app/manifests/v1",
		"blob": "/v2/app/blobs/sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			missWithoutLeader(t, &registry{t: t, url: srv.URL}, path)
		})
	}
}

func missWithoutLeader(t *testing.T, r *registry, path string) {
	start := time.Now()
	resp, body := r.do("GET", path, nil)
	took := time.Since(start)
	expect(t, resp, body, http.StatusServiceUnavailable, "UNAVAILABLE")
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("GET %s: Retry-After %q, want whole seconds", path, resp.Header.Get("Retry-After"))
	}
	if took > 5*time.Second {
		t.Errorf("GET %s took %v: a read's wait for a leader is bounded", path, took)
	}
	t.Logf("GET %s: %d after %v: %s", path, resp.StatusCode, took.Round(time.Millisecond), body)
}
