package testnet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Distribution is CNCF Distribution v3 (`registry` from .tools/bin) started
// by a test on 127.0.0.1 with a filesystem store and, optionally, htpasswd
// users: the upstream of mirror tests. It can be stopped and started again
// on the same address with the same content.
type Distribution struct {
	t    testing.TB
	bin  string
	dir  string
	addr string

	mu   sync.Mutex
	proc *Process
}

const distributionTestConfig = `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
%s`

// StartDistribution starts a registry; users maps user names to
// passwords (htpasswd Basic auth; none: open). It stops when the test ends.
func StartDistribution(t testing.TB, users map[string]string) *Distribution {
	t.Helper()
	bin := Tool(t, "registry")
	dir := t.TempDir()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	auth := ""
	if len(users) > 0 {
		var b strings.Builder
		for u, p := range users {
			h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
			if err != nil {
				t.Fatal(err)
			}
			b.WriteString(u + ":" + string(h) + "\n")
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: upstream\n    path: %s\n", pw)
	}
	cfg := fmt.Sprintf(distributionTestConfig, filepath.Join(dir, "data"), addr, RandomHex(16), auth)
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &Distribution{t: t, bin: bin, dir: dir, addr: addr}
	d.Start()
	t.Cleanup(d.Stop)
	return d
}

// Host is the registry's host:port.
func (d *Distribution) Host() string { return d.addr }

// URL is its base URL (plain HTTP).
func (d *Distribution) URL() string { return "http://" + d.addr }

// LogPath is the file its output goes to.
func (d *Distribution) LogPath() string { return filepath.Join(d.dir, "registry.log") }

// Start starts it (again) and waits until it answers.
func (d *Distribution) Start() {
	d.t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc != nil {
		return
	}
	p, err := StartProcess(ProcessConfig{Name: "registry", Path: d.bin, Dir: d.dir, LogPath: d.LogPath(),
		Args: []string{"serve", filepath.Join(d.dir, "config.yml")}, Env: []string{"OTEL_TRACES_EXPORTER=none"},
		StripEnv: []string{"REGISTRY_", "OTEL_"}})
	if err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// 401 with auth on, 200 without: either says it is up.
	if err := p.WaitHTTP(ctx, d.URL()+"/", 200); err != nil {
		p.Kill()
		d.t.Fatalf("registry did not start: %v (log %s)", err, d.LogPath())
	}
	d.proc = p
}

// Stop stops it (SIGTERM, then kill).
func (d *Distribution) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return
	}
	_ = d.proc.Stop(10 * time.Second)
	d.proc = nil
}
