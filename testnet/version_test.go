package testnet_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/node/buildinfo"
	"github.com/meshreg/meshreg/testnet"
)

// TestBuildStamps builds meshreg with the -X stamps `make build` sets and
// checks that the version, commit and date show in `meshreg version` (one
// line and --json), in the status document's build object, in the
// meshreg_build_info metric, and in the data dir's FORMAT.
func TestBuildStamps(t *testing.T) {
	testnet.RequireProcess(t)
	if testing.Short() {
		t.Skip("builds a binary: skipped with -short")
	}
	const (
		version = "v0.0.0-stamptest"
		commit  = "0123456789abcdef0123456789abcdef01234567"
		date    = "2026-11-30T08:00:00Z"
	)
	root, err := testnet.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	bin, err := testnet.BuildMeshregWith(ctx, root, t.TempDir(), buildinfo.Ldflags(version, commit, date))
	if err != nil {
		t.Fatal(err)
	}

	line, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		t.Fatalf("meshreg version: %v", err)
	}
	want := "meshreg " + version + " (commit 0123456789ab, built " + date + ", " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")\n"
	if string(line) != want {
		t.Errorf("meshreg version printed %q, want %q", line, want)
	}
	raw, err := exec.CommandContext(ctx, bin, "version", "--json").Output()
	if err != nil {
		t.Fatalf("meshreg version --json: %v", err)
	}
	var got buildinfo.Info
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("meshreg version --json printed %q: %v", raw, err)
	}
	if got.Version != version || got.Commit != commit || got.Date != date || got.GoVersion != runtime.Version() {
		t.Errorf("meshreg version --json = %+v; want version %s, commit %s, date %s, %s", got, version, commit, date, runtime.Version())
	}

	dataDir := filepath.Join(testnet.KeepDir(t, "stamped"), "data")
	p, url, _ := startServe(t, bin, dataDir, "stamped")
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	if err := p.WaitHTTP(rctx, url+"/readyz", http.StatusOK); err != nil {
		t.Fatal(err)
	}
	c := testnet.NewClient(url)
	_, _, body, err := c.Get(ctx, "/_meshreg/v1/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Version string         `json:"version"`
		Build   buildinfo.Info `json:"build"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("status %s: %v", body, err)
	}
	if st.Build != got || st.Version != version {
		t.Errorf("status: version %q, build %+v; want %q and the build meshreg version --json printed, %+v", st.Version, st.Build, version, got)
	}
	_, _, metrics, err := c.Get(ctx, "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	metric := regexp.MustCompile(`(?m)^meshreg_build_info\{([^}]*)\} 1$`).FindSubmatch(metrics)
	if metric == nil {
		t.Fatalf("no meshreg_build_info{…} 1 in /metrics:\n%s", metrics)
	}
	for _, label := range []string{`version="` + version + `"`, `commit="` + commit + `"`, `go_version="` + runtime.Version() + `"`} {
		if !strings.Contains(string(metric[1]), label) {
			t.Errorf("meshreg_build_info{%s} lacks %s", metric[1], label)
		}
	}
	format, err := os.ReadFile(filepath.Join(dataDir, "FORMAT"))
	if err != nil || !strings.Contains(string(format), `"written_by":"`+version+`"`) {
		t.Errorf("FORMAT = %q (err %v); want it written by %s", format, err, version)
	}
}
