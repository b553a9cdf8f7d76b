package testnet_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/meshreg/meshreg/testnet"
)

const authPolicy = `rules:
  - users: [alice]
    repos: ["team/**", "public/**", "secret/**"]
    allow: [pull, push, delete]
  - users: [bob]
    repos: ["team/**"]
    allow: [pull]
  - users: [anonymous]
    repos: ["public/**"]
    allow: [pull]
  - users: [alice]
    allow: [admin]
`

func writeHtpasswd(t *testing.T, path string, users ...string) {
	t.Helper()
	var b strings.Builder
	for _, u := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(u+"-pw"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(u + ":" + string(h) + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCraneWithBasicAuth: a meshreg process with --auth-htpasswd and
// --auth-policy, used by crane as its users would: `crane auth login`
// into a Docker config, then push and pull; denials come back as crane
// shows them; a user removed from the htpasswd file is refused within 5 s.
func TestCraneWithBasicAuth(t *testing.T) {
	t.Parallel()
	testnet.RequireProcess(t)
	work := t.TempDir()
	users, pol := filepath.Join(work, "htpasswd"), filepath.Join(work, "policy.yaml")
	writeHtpasswd(t, users, "alice", "bob")
	if err := os.WriteFile(pol, []byte(authPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnet.StartNode(t, testnet.Options{Args: []string{"--auth-htpasswd", users, "--auth-policy", pol}})
	crane := testnet.Tool(t, "crane")
	as := func(user string) testnet.Runner {
		home := filepath.Join(work, "home-"+user)
		if err := os.MkdirAll(home, 0o700); err != nil {
			t.Fatal(err)
		}
		return testnet.Runner{T: t, Path: crane, Dir: work, Env: []string{"HOME=" + home, "DOCKER_CONFIG=" + filepath.Join(home, ".docker")}}
	}
	alice, bob, anon := as("alice"), as("bob"), as("anonymous")
	alice.Run("auth", "login", n.Host(), "-u", "alice", "-p", "alice-pw")
	bob.Run("auth", "login", n.Host(), "-u", "bob", "-p", "bob-pw")
	if res := as("eve").Try("auth", "login", n.Host(), "-u", "alice", "-p", "wrong"); res.Err == nil {
		// crane auth login only writes the config; the next call fails.
		if res := as("eve").Try("catalog", "--insecure", n.Host()); res.Err == nil || !strings.Contains(string(res.Stderr), "UNAUTHORIZED") {
			t.Errorf("a wrong password: crane catalog %v\n%s", res.Err, res.Stderr)
		}
	}

	layer := filepath.Join(work, "layer.tar")
	if _, err := testnet.WriteLayerTar(layer, "l", 2, 64<<10); err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"team/app", "public/base", "secret/x"} {
		alice.Run("append", "--insecure", "--oci-empty-base", "-t", n.Host()+"/"+repo+":v1", "-f", layer)
	}

	bob.Run("manifest", "--insecure", n.Host()+"/team/app:v1")
	bob.Run("pull", "--insecure", "--format", "oci", n.Host()+"/team/app:v1", filepath.Join(work, "bob-pulled"))
	if res := bob.Try("append", "--insecure", "--oci-empty-base", "-t", n.Host()+"/team/bob:v1", "-f", layer); res.Err == nil || !strings.Contains(string(res.Stderr), "DENIED") {
		t.Errorf("bob pushing to team/: %v, want DENIED\n%s", res.Err, res.Stderr)
	}
	if res := bob.Try("manifest", "--insecure", n.Host()+"/secret/x:v1"); res.Err == nil || !strings.Contains(string(res.Stderr), "DENIED") {
		t.Errorf("bob pulling secret/: %v, want DENIED\n%s", res.Err, res.Stderr)
	}
	if got := strings.Fields(string(bob.Run("catalog", "--insecure", n.Host()))); strings.Join(got, " ") != "public/base team/app" {
		t.Errorf("bob's catalog %v, want public/base team/app", got)
	}

	anon.Run("manifest", "--insecure", n.Host()+"/public/base:v1")
	if res := anon.Try("manifest", "--insecure", n.Host()+"/team/app:v1"); res.Err == nil || !strings.Contains(string(res.Stderr), "UNAUTHORIZED") {
		t.Errorf("anonymous pulling team/: %v, want UNAUTHORIZED\n%s", res.Err, res.Stderr)
	}

	start := time.Now()
	writeHtpasswd(t, users, "alice")
	for {
		res := bob.Try("manifest", "--insecure", n.Host()+"/team/app:v1")
		if res.Err != nil {
			if !strings.Contains(string(res.Stderr), "UNAUTHORIZED") {
				t.Errorf("bob after his removal: %v, want UNAUTHORIZED\n%s", res.Err, res.Stderr)
			}
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("bob still served 5 s after his removal from the htpasswd file, without a restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("bob refused %v after his removal", time.Since(start).Round(10*time.Millisecond))
	alice.Run("manifest", "--insecure", n.Host()+"/team/app:v1")
}
