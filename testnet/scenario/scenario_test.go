package scenario_test

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshreg/meshreg/testnet/scenario"
)

const minimal = `
name = "t"
[[nodes]]
name = "n1"
region = "r"
zone = "z"
`

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	s, err := scenario.Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if s.Replicas != 2 || s.Timeout.Duration != 5*time.Minute || s.Start != "join" || s.Workload.Repo != "testnet/t" {
		t.Errorf("defaults not applied: %+v", s)
	}
}

func TestParseRejectsBadFiles(t *testing.T) {
	t.Parallel()
	node := func(name string) string {
		return "[[nodes]]\nname = \"" + name + "\"\nregion = \"r\"\nzone = \"z\"\n"
	}
	tests := []struct {
		name, file, want string
	}{
		{"no name", node("n1"), "name: missing"},
		{"no nodes", `name = "t"`, "at least one node"},
		{"unknown key", "replica = 3\n" + minimal, "unknown keys: replica"},
		{"bad duration", "timeout = \"ten\"\n" + minimal, "duration \"ten\""},
		{"bad size", minimal + "[workload]\nduration=\"1s\"\n[workload.push]\ncount=1\nlayer_size=\"8 XB\"\n", "size \"8 XB\""},
		{"reserved node name", "name=\"t\"\n" + node("leader"), "reserved"},
		{"duplicate node", "name=\"t\"\n" + node("a") + node("a"), "used twice"},
		{"unknown action", minimal + "[[events]]\naction = \"explode\"\ntarget = \"n1\"\n", "unknown action \"explode\""},
		{"unknown target", minimal + "[[events]]\naction = \"kill\"\ntarget = \"n9\"\n", "node \"n9\" not declared"},
		{"events out of order", minimal + "[[events]]\nat=\"5s\"\naction=\"kill\"\ntarget=\"n1\"\n[[events]]\nat=\"1s\"\naction=\"heal\"\n", "time order"},
		{"event after timeout", "timeout=\"10s\"\n" + minimal + "[[events]]\nat=\"20s\"\naction=\"heal\"\n", "past the timeout"},
		{"unbounded workload", minimal + "[workload.push]\ncount=10\n", "duration required"},
		{"too many pushes", minimal + "[workload]\nduration=\"1s\"\n[workload.push]\ncount=100000\n", "at most"},
		{"add a started node", minimal + "[[events]]\naction=\"add\"\ntarget=\"n1\"\n", "later = true"},
		{"pull of an unknown image", minimal + "[[events]]\naction=\"pull\"\ntarget=\"n1\"\nimage=\"x\"\n", "not pushed by an earlier push"},
		{"docker without to", minimal + "[[events]]\naction=\"docker\"\ntarget=\"n1\"\n", "to (the node"},
		{"link to an empty region", minimal + "[[links]]\nregions=[\"r\",\"far\"]\nrate=\"1mbit\"\n", "region \"far\" has no node"},
		{"expect on no pull", minimal + "[[expect]]\nevent=\"x\"\nserved_by=[\"n1\"]\n", "not the label of an event"},
		{"served_by on a kill", minimal + "[[events]]\naction=\"kill\"\ntarget=\"n1\"\nlabel=\"k\"\n[[expect]]\nevent=\"k\"\nserved_by=[\"n1\"]\n", "need a pull event"},
		{"empty expect", minimal + "[[events]]\naction=\"kill\"\ntarget=\"n1\"\nlabel=\"k\"\n[[expect]]\nevent=\"k\"\n", "nothing to check"},
		{"label twice", minimal + "[[events]]\naction=\"kill\"\ntarget=\"n1\"\nlabel=\"k\"\n[[events]]\naction=\"heal\"\nlabel=\"k\"\n", "used twice"},
		{"partition without nodes", minimal + "[[events]]\naction=\"partition\"\n", "nodes (the set cut off) missing"},
		{"flood without count", minimal + "[[events]]\naction=\"flood\"\ntarget=\"n1\"\nfor=\"1s\"\n", "count 0: between 1 and"},
		{"unbounded flood", minimal + "[[events]]\naction=\"flood\"\ntarget=\"n1\"\ncount=10\n", "for 0s: positive"},
		{"abbreviated previous", "previous = \"3ff7f87\"\n" + minimal, "full 40-hex git revision"},
		{"upgrade without previous", minimal + "[[events]]\naction=\"upgrade\"\ntarget=\"n1\"\n", "needs previous"},
		{"slow readers of an unknown image", minimal + "[[events]]\naction=\"slow-readers\"\ntarget=\"n1\"\nimage=\"x\"\ncount=1\nfor=\"1s\"\n", "not pushed by an earlier push"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := scenario.Parse(strings.NewReader(tt.file))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestShippedScenariosParse(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("../scenarios/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped scenarios: %v", err)
	}
	for _, f := range files {
		s, err := scenario.Load(f)
		if err != nil {
			t.Error(err)
			continue
		}
		if want := strings.TrimSuffix(filepath.Base(f), ".toml"); s.Name != want {
			t.Errorf("%s is named %q, want its file name %q", f, s.Name, want)
		}
	}
}

// envRequireDocker=1 turns "no Docker daemon" from a skip into a failure.
const envRequireDocker = "REQUIRE_DOCKER"

func requireDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs containers: skipped with -short")
	}
	fail := t.Skipf
	if os.Getenv(envRequireDocker) == "1" {
		fail = t.Fatalf
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		fail("no Docker daemon reachable (docker info: %v: %s); %s=1 makes this a failure", err, strings.TrimSpace(string(out)), envRequireDocker)
	}
}

// nodeImage builds the node image once for the tests of this package.
var nodeImage = sync.OnceValues(func() (string, error) {
	const tag = "meshreg-testnet:test"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return tag, scenario.BuildImage(ctx, tag)
})

func runShipped(t *testing.T, name string) {
	requireDocker(t)
	s, err := scenario.Load(filepath.Join("..", "scenarios", name+".toml"))
	if err != nil {
		t.Fatal(err)
	}
	image, err := nodeImage()
	if err != nil {
		t.Fatal(err)
	}
	opt := scenario.Options{Image: image}
	if s.Previous != "" {
		// Never a skip: a clone without the revision fails, saying how
		// to fetch it.
		opt.PreviousImage = scenario.PreviousImageTag(s.Previous)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
		err := scenario.BuildRevisionImage(ctx, s.Previous, opt.PreviousImage)
		cancel()
		if err != nil {
			t.Fatalf("scenario %s starts from revision %s: %v", name, s.Previous, err)
		}
	}
	out := t.TempDir()
	if dir := os.Getenv("TESTNET_OUT"); dir != "" {
		out = dir // keep reports and logs after the test
	}
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	opt.OutDir, opt.Log = out, log
	rep, err := scenario.Run(t.Context(), s, opt)
	t.Log("\n" + rep.Markdown())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Passed {
		t.Fatalf("scenario %s failed: %s (logs in %s)", name, strings.Join(rep.Failures, "; "), filepath.Join(out, name))
	}
	if rep.BytesLost != 0 {
		t.Errorf("bytes lost %d, want 0", rep.BytesLost)
	}
}

func TestScenarioSmoke(t *testing.T) { runShipped(t, "smoke") }

func TestScenarioFailover(t *testing.T) { runShipped(t, "failover") }

// TestScenarioHostile: an attacker with no credentials on the cluster's
// network (intrude, flood, slow-readers, junk-methods, oversized) loses
// nothing acknowledged, takes no node down, is refused every time and
// does not explode /metrics.
func TestScenarioHostile(t *testing.T) { runShipped(t, "hostile") }

// TestScenarioUpgrade: a rolling upgrade from the previous release
// (upgrade.toml names its revision) to the working tree, node by node
// under load, loses nothing acknowledged; every upgraded node keeps its
// identity and blobs and serves what was pushed before the upgrade.
func TestScenarioUpgrade(t *testing.T) { runShipped(t, "upgrade") }
