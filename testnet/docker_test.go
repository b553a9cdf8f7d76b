package testnet_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/testnet"
)

// envRequireDocker=1 (set by .ci/run) turns "no Docker daemon" from a skip
// into a failure.
const envRequireDocker = "REQUIRE_DOCKER"

// TestDockerPushPull builds a tiny image FROM scratch holding a static Go
// program, pushes it to the node with the Docker engine, removes it
// locally, pulls it back and runs it: the output and the image id must be
// what was built.
func TestDockerPushPull(t *testing.T) {
	t.Parallel()
	docker := requireDocker(t)
	n := testnet.StartNode(t, testnet.Options{})
	dockerRoundTrip(t, docker, n, n)
}

// TestDockerPushToOneNodePullFromAnother is the cluster promise with the
// real Docker engine: push to node 1, pull the same image through node 3,
// whose bytes come from its peers.
func TestDockerPushToOneNodePullFromAnother(t *testing.T) {
	testnet.RequireProcess(t)
	t.Parallel()
	docker := requireDocker(t)
	nodes := testnet.StartCluster(t, 3, testnet.Options{})
	dockerRoundTrip(t, docker, nodes[0], nodes[2])
	if fetched := metric(t, nodes[2], "meshreg_peer_bytes_fetched_total"); fetched == 0 {
		t.Errorf("node 3 served the pull but fetched no bytes from peers")
	}
}

// dockerRoundTrip builds a tiny image FROM scratch, pushes it to node push,
// removes it locally, pulls it through node pull and runs it.
func dockerRoundTrip(t *testing.T, docker string, push, pull *testnet.Node) {
	t.Helper()
	dockerRoundTripIn(t, testnet.Runner{T: t, Path: docker, Dir: t.TempDir()}, "e2e/hello", push, pull)
}

// dockerRoundTripIn is dockerRoundTrip with the docker CLI r (its
// environment, a logged-in DOCKER_CONFIG say) and a repository under
// prefix.
func dockerRoundTripIn(t *testing.T, r testnet.Runner, prefix string, push, pull *testnet.Node) {
	t.Helper()
	work, docker := r.Dir, r.Path

	// A static program printing a message unique to this run, so that
	// nothing cached by an earlier run can pass for it.
	msg := "hello from meshreg e2e " + testnet.RandomHex(8)
	buildHello(t, work, msg)
	writeFile(t, filepath.Join(work, "Dockerfile"), []byte(
		"FROM scratch\nCOPY hello /hello\nLABEL org.meshreg.e2e=1\nENTRYPOINT [\"/hello\"]\n"))

	repo := testnet.UniqueRepo(prefix)
	tag := push.Host() + "/" + repo + ":v1"
	pullTag := pull.Host() + "/" + repo + ":v1"
	if r.Try("buildx", "version").Err != nil {
		// Without the buildx plugin the CLI needs to be told to use the
		// classic builder.
		r.Env = append(r.Env, "DOCKER_BUILDKIT=0")
	}
	t.Cleanup(func() {
		// Remove what the test made, even if it failed half-way.
		exec.Command(docker, "rmi", "-f", tag).Run()
		exec.Command(docker, "rmi", "-f", pullTag).Run()
	})
	r.Run("build", "-t", tag, ".")
	built := strings.TrimSpace(string(r.Run("image", "inspect", "-f", "{{.Id}}", tag)))
	t.Cleanup(func() { exec.Command(docker, "rmi", "-f", built).Run() })

	out := r.Run("push", tag)
	m := regexp.MustCompile(`digest: (sha256:[0-9a-f]{64})`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("docker push printed no digest:\n%s", out)
	}
	pushed := string(m[1])
	_, _, served, err := testnet.NewClient(pull.URL()).GetManifest(t.Context(), repo, "v1")
	if err != nil {
		t.Fatalf("after docker push: %v", err)
	}
	if served != pushed {
		t.Errorf("%s serves %s:v1 as %s, docker push said %s", pull.Host(), repo, served, pushed)
	}

	// Remove it locally: the pull must come from the registry.
	r.Run("rmi", tag)
	if res := r.Try("image", "inspect", built); res.Err == nil {
		// Another tag still holds the image: remove that too.
		r.Run("rmi", "-f", built)
	}
	r.Run("pull", pullTag)
	pulled := strings.TrimSpace(string(r.Run("image", "inspect", "-f", "{{.Id}}", pullTag)))
	if pulled != built {
		t.Errorf("image id after pull %s, built %s", pulled, built)
	}
	repoDigests := string(r.Run("image", "inspect", "-f", "{{json .RepoDigests}}", pullTag))
	if !strings.Contains(repoDigests, pushed) {
		t.Errorf("pulled image's RepoDigests %s lack the pushed %s", strings.TrimSpace(repoDigests), pushed)
	}
	got := strings.TrimSpace(string(r.Run("run", "--rm", pullTag)))
	if got != msg {
		t.Errorf("docker run printed %q, want %q", got, msg)
	}
}

// requireDocker returns the docker CLI's path if a daemon answers; else it
// skips the test, or fails it when REQUIRE_DOCKER=1.
func requireDocker(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	fail := t.Skipf
	if os.Getenv(envRequireDocker) == "1" {
		fail = t.Fatalf
	}
	docker, err := exec.LookPath("docker")
	if err != nil {
		fail("no docker CLI in PATH (%v); %s=1 makes this a failure", err, envRequireDocker)
		return ""
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, docker, "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err != nil {
		fail("no Docker daemon reachable (docker info: %v: %s); %s=1 makes this a failure", err, strings.TrimSpace(string(out)), envRequireDocker)
		return ""
	}
	t.Logf("Docker engine %s", strings.TrimSpace(string(out)))
	return docker
}

// buildHello compiles a static program printing msg into dir/hello.
func buildHello(t *testing.T, dir, msg string) {
	t.Helper()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "go.mod"), []byte("module hello\n\ngo 1.22\n"))
	writeFile(t, filepath.Join(src, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nvar msg = \"unset\"\n\nfunc main() { fmt.Println(msg) }\n"))
	cmd := exec.CommandContext(t.Context(), "go", "build", "-trimpath", "-ldflags", fmt.Sprintf("-s -w -X 'main.msg=%s'", msg), "-o", filepath.Join(dir, "hello"), ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the test program: %v\n%s", err, out)
	}
}
