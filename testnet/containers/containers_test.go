package containers_test

import (
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/containers"
)

// TestContainersLifecycle starts two node containers and exercises what
// the runner relies on: addresses, a cut between them and its heal,
// shaping, kill and start again with the exit seen as expected.
func TestContainersLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("needs Docker: skipped with -short")
	}
	ctx := t.Context()
	d, err := containers.New(ctx, "ct"+testnet.RandomHex(4), slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		if os.Getenv("REQUIRE_DOCKER") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	t.Cleanup(func() {
		if err := d.Cleanup(); err != nil {
			t.Error(err)
		}
	})
	const image = "meshreg-testnet:containers-test"
	if err := testnet.BuildImage(ctx, image); err != nil {
		t.Fatal(err)
	}
	nw, err := d.CreateNetwork(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := func(name string, args ...string) *containers.Container {
		c, err := d.Start(ctx, containers.Spec{Name: "meshreg-" + d.RunID() + "-" + name, Image: image, Network: nw, Port: 5000, Args: append([]string{"serve"}, args...)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := start("a")
	up := func(url string) bool {
		return testnet.Eventually(20*time.Second, func() bool {
			r, err := http.Get(url + "/readyz")
			if err != nil {
				return false
			}
			r.Body.Close()
			return r.StatusCode == 200
		})
	}
	if !up(a.URL()) {
		t.Fatal("node a not ready")
	}
	// b is admitted with a join token that a issues (its API answers
	// loopback only, so ask from inside its container).
	token, err := a.Exec(ctx, "/meshreg", "token", "create", "--node", "http://127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	b := start("b", "--join", "http://"+a.IP()+":5000", "--join-token", token)
	if !up(b.PublishedURL()) {
		t.Fatal("nodes not ready")
	}
	if err := a.Block(ctx, []string{b.IP()}); err != nil {
		t.Fatal(err)
	}
	if err := a.Block(ctx, []string{b.IP()}); err != nil {
		t.Fatal("second block:", err)
	}
	if err := a.Unblock(ctx); err != nil {
		t.Fatal(err)
	}
	sh, err := a.Shape(ctx, "20mbit", 80*time.Millisecond, []string{b.IP()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shaping: %+v", sh)
	if err := b.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := b.State(ctx)
	if err != nil || st.Running || st.Expected != "killed" {
		t.Fatalf("after kill: %+v %v", st, err)
	}
	if err := b.StartAgain(ctx); err != nil {
		t.Fatal(err)
	}
	if !up(b.URL()) {
		t.Fatal("b not ready after start again")
	}
	logs, _ := a.Logs(ctx)
	if !strings.Contains(logs, "{") {
		t.Errorf("logs of a: %q", logs)
	}
}
