package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

// hostsFile is what containerd reads from a hosts.toml (the fields we write).
type hostsFile struct {
	Server     string `toml:"server"`
	SkipVerify bool   `toml:"skip_verify"`
	Host       map[string]struct {
		Capabilities []string `toml:"capabilities"`
		DialTimeout  string   `toml:"dial_timeout"`
		SkipVerify   bool     `toml:"skip_verify"`
	} `toml:"host"`
}

func readHostsToml(t *testing.T, path string) (hostsFile, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var h hostsFile
	if _, err := toml.Decode(string(b), &h); err != nil {
		t.Fatalf("%s is not TOML: %v\n%s", path, err, b)
	}
	return h, string(b)
}

// runApp runs the meshreg CLI in this process and returns its stdout,
// stderr and error.
func runApp(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	clearMeshregEnv(t)
	var out, errb bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := app.RunContext(ctx, append([]string{"meshreg"}, args...))
	return out.String(), errb.String(), err
}

func TestMirrorContainerdWritesHostsToml(t *testing.T) {
	dir := t.TempDir()
	out, _, err := runApp(t, "mirror", "containerd", "--hosts-dir", dir,
		"--registries", "docker.io,ghcr.io", "--registries", "quay.io=https://quay.example:8443/", "--registries", "_default",
		"--node", "http://127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	for name, server := range map[string]string{
		"docker.io": "https://registry-1.docker.io",
		"ghcr.io":   "https://ghcr.io",
		"quay.io":   "https://quay.example:8443",
		"_default":  "",
	} {
		path := filepath.Join(dir, name, "hosts.toml")
		h, text := readHostsToml(t, path)
		if h.Server != server {
			t.Errorf("%s: server = %q, want %q", path, h.Server, server)
		}
		host, ok := h.Host["http://127.0.0.1:5000"]
		if !ok || len(h.Host) != 1 {
			t.Fatalf("%s: hosts %v, want only the node http://127.0.0.1:5000:\n%s", path, h.Host, text)
		}
		if !slices.Equal(host.Capabilities, []string{"pull", "resolve"}) || host.DialTimeout != "200ms" || host.SkipVerify {
			t.Errorf("%s: node host %+v, want pull+resolve, dial_timeout 200ms, no skip_verify", path, host)
		}
		if !strings.HasPrefix(text, hostsTomlMarker) {
			t.Errorf("%s does not start with the marker that says we wrote it:\n%s", path, text)
		}
		if !strings.Contains(out, "wrote "+path) {
			t.Errorf("output %q does not name %s", out, path)
		}
	}

	// Again: nothing changes, and it says so.
	out, _, err = runApp(t, "mirror", "containerd", "--hosts-dir", dir, "--registries", "docker.io", "--node", "http://127.0.0.1:5000")
	if err != nil || !strings.Contains(out, "unchanged "+filepath.Join(dir, "docker.io", "hosts.toml")) {
		t.Errorf("second run: %q, %v; want unchanged", out, err)
	}
	// Another node URL: our own file is replaced, without a backup.
	if _, _, err := runApp(t, "mirror", "containerd", "--hosts-dir", dir, "--registries", "docker.io", "--node", "https://10.0.0.5:5000", "--skip-verify", "--dial-timeout", "0"); err != nil {
		t.Fatal(err)
	}
	h, text := readHostsToml(t, filepath.Join(dir, "docker.io", "hosts.toml"))
	if host, ok := h.Host["https://10.0.0.5:5000"]; !ok || len(h.Host) != 1 || !host.SkipVerify || host.DialTimeout != "" {
		t.Errorf("after a new --node: %+v, want only https://10.0.0.5:5000 with skip_verify and no dial_timeout:\n%s", h.Host, text)
	}
	if _, err := os.Stat(filepath.Join(dir, "docker.io", hostsTomlBackup)); err == nil {
		t.Error("our own file was backed up")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*", ".*tmp*")); len(left) > 0 {
		t.Errorf("temp files left: %v", left)
	}
}

// The node's own name: its server is the node, no mirror in front.
func TestMirrorContainerdOwnName(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := runApp(t, "mirror", "containerd", "--hosts-dir", dir, "--registries", "127.0.0.1:5000", "--node", "127.0.0.1:5000"); err != nil {
		t.Fatal(err)
	}
	h, text := readHostsToml(t, filepath.Join(dir, "127.0.0.1:5000", "hosts.toml"))
	if h.Server != "http://127.0.0.1:5000" || len(h.Host) != 0 {
		t.Errorf("own name: server %q hosts %v, want server http://127.0.0.1:5000 alone:\n%s", h.Server, h.Host, text)
	}
}

func TestMirrorContainerdBackupAndRestore(t *testing.T) {
	dir := t.TempDir()
	theirs := "server = \"https://registry-1.docker.io\"\n# the operator's\n"
	if err := os.MkdirAll(filepath.Join(dir, "docker.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	backup := path + ".meshreg-backup"
	if err := os.WriteFile(path, []byte(theirs), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"mirror", "containerd", "--hosts-dir", dir, "--registries", "docker.io,ghcr.io"}
	out, _, err := runApp(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(backup); err != nil || string(b) != theirs {
		t.Fatalf("backup %s = %q, %v; want the operator's file", backup, b, err)
	}
	if !strings.Contains(out, backup) {
		t.Errorf("output %q does not say where the backup is", out)
	}
	// Idempotent: the backup stays the operator's file.
	if _, _, err := runApp(t, args...); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(backup); string(b) != theirs {
		t.Errorf("a second run changed the backup to %q", b)
	}

	// Restore: the operator's file is back, ours (ghcr.io) is gone with its directory.
	out, _, err = runApp(t, "mirror", "containerd", "--hosts-dir", dir, "--restore")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != theirs {
		t.Errorf("after --restore %s = %q, %v; want the operator's file", path, b, err)
	}
	if _, err := os.Stat(backup); err == nil {
		t.Error("the backup is still there after --restore")
	}
	if _, err := os.Stat(filepath.Join(dir, "ghcr.io")); err == nil {
		t.Errorf("ghcr.io/ is still there after --restore (output %q)", out)
	}
	// Restoring again changes nothing.
	if out, _, err := runApp(t, "mirror", "containerd", "--hosts-dir", dir, "--restore"); err != nil || !strings.Contains(out, "nothing to restore") {
		t.Errorf("second --restore: %q, %v", out, err)
	}
	if b, _ := os.ReadFile(path); string(b) != theirs {
		t.Errorf("a second --restore changed %s to %q", path, b)
	}
}

// The operator replaced our file after we backed theirs up: which one is
// right is theirs to say, so nothing is overwritten.
func TestMirrorContainerdRefusesToLoseAFile(t *testing.T) {
	dir := t.TempDir()
	args := []string{"mirror", "containerd", "--hosts-dir", dir, "--registries", "docker.io"}
	path := filepath.Join(dir, "docker.io", "hosts.toml")
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, []byte("# first\n"), 0o644)
	if _, _, err := runApp(t, args...); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("# second\n"), 0o644)
	_, _, err := runApp(t, args...)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), hostsTomlBackup) {
		t.Fatalf("err = %v, want one naming %s and its backup", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "# second\n" {
		t.Errorf("%s = %q, want the operator's second file untouched", path, b)
	}
	if _, _, err := runApp(t, "mirror", "containerd", "--hosts-dir", dir, "--restore"); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("--restore with both files: %v, want an error naming %s", err, path)
	}
}

func TestMirrorContainerdDryRun(t *testing.T) {
	dir := t.TempDir()
	out, _, err := runApp(t, "mirror", "containerd", "--hosts-dir", dir, "--registries", "docker.io", "--dry-run")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `server = "https://registry-1.docker.io"`) || !strings.Contains(out, `[host."http://127.0.0.1:5000"]`) {
		t.Errorf("dry run printed %q, want the file", out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("dry run wrote %v", entries)
	}
}

func TestMirrorContainerdBadInput(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"path in name", []string{"--registries", "../etc"}, `registry name "../etc"`},
		{"slash in name", []string{"--registries", "docker.io/library"}, "want host[:port]"},
		{"scheme as name", []string{"--registries", "https://ghcr.io"}, "want host[:port]"},
		{"port 0", []string{"--registries", "r.example:0"}, "port"},
		{"port too big", []string{"--registries", "r.example:70000"}, "port"},
		{"empty label", []string{"--registries", "a..b"}, "DNS label"},
		{"dash label", []string{"--registries", "-a.example"}, "DNS label"},
		{"bad ipv6", []string{"--registries", "[10.0.0.1]:5000"}, "IPv6"},
		{"twice", []string{"--registries", "ghcr.io,ghcr.io"}, "twice"},
		{"server not a URL", []string{"--registries", "ghcr.io=ftp://x"}, "not an http(s) URL"},
		{"no registries", nil, "name at least one registry"},
		{"node with a path", []string{"--registries", "ghcr.io", "--node", "http://127.0.0.1:5000/x"}, "root of its URL"},
		{"node not a URL", []string{"--registries", "ghcr.io", "--node", "ftp://h:1"}, "--node"},
		{"dial timeout", []string{"--registries", "ghcr.io", "--dial-timeout", "2h"}, "--dial-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runApp(t, append([]string{"mirror", "containerd", "--hosts-dir", dir}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("bad input wrote %v", entries)
	}
	for _, ok := range []string{"docker.io", "127.0.0.1:5000", "[::1]:5000", "localhost", "my-registry.example.com:443", "_default"} {
		if err := validRegistryName(ok); err != nil {
			t.Errorf("validRegistryName(%q) = %v", ok, err)
		}
	}
}

func TestMergeDaemonJSON(t *testing.T) {
	doc := []byte(`{"log-driver": "journald", "registry-mirrors": ["https://mirror.example"], "features": {"buildkit": true}}`)
	merged, changed, err := mergeDaemonJSON(doc, "http://127.0.0.1:5000", "")
	if err != nil || !changed {
		t.Fatalf("merge: %v, changed %v", err, changed)
	}
	var got map[string]any
	if err := json.Unmarshal(merged, &got); err != nil {
		t.Fatal(err)
	}
	if got["log-driver"] != "journald" || got["features"].(map[string]any)["buildkit"] != true {
		t.Errorf("other keys lost: %s", merged)
	}
	if m := got["registry-mirrors"].([]any); len(m) != 2 || m[0] != "http://127.0.0.1:5000" || m[1] != "https://mirror.example" {
		t.Errorf("registry-mirrors = %v, want the node first, then the existing mirror", m)
	}
	if _, ok := got["insecure-registries"]; ok {
		t.Error("insecure-registries added for a loopback node")
	}
	if again, changed, err := mergeDaemonJSON(merged, "http://127.0.0.1:5000/", ""); err != nil || changed || !bytes.Equal(again, merged) {
		t.Errorf("merging twice changed the document: %v %v", changed, err)
	}

	mirror, insecure := dockerMirrorEntry("http://10.0.0.5:5000")
	merged, _, err = mergeDaemonJSON(nil, mirror, insecure)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(merged), `"insecure-registries": [`) || !strings.Contains(string(merged), `"10.0.0.5:5000"`) {
		t.Errorf("a plain-HTTP node on 10.0.0.5: %s, want insecure-registries", merged)
	}
	if _, insecure := dockerMirrorEntry("https://10.0.0.5:5000"); insecure != "" {
		t.Errorf("an https node is insecure-registries %q", insecure)
	}
	for _, bad := range []string{`[1,2]`, `{"registry-mirrors": "http://x"}`, `{`} {
		if _, _, err := mergeDaemonJSON([]byte(bad), mirror, insecure); err == nil {
			t.Errorf("merge into %s: no error", bad)
		}
	}
}

func TestMirrorDocker(t *testing.T) {
	out, errOut, err := runApp(t, "mirror", "docker", "--node", "10.0.0.5:5000")
	if err != nil {
		t.Fatal(err)
	}
	var entry map[string][]string
	if err := json.Unmarshal([]byte(out), &entry); err != nil {
		t.Fatalf("stdout is not the JSON entry: %v\n%s", err, out)
	}
	if !slices.Equal(entry["registry-mirrors"], []string{"http://10.0.0.5:5000"}) || !slices.Equal(entry["insecure-registries"], []string{"10.0.0.5:5000"}) {
		t.Errorf("entry %v", entry)
	}
	if !strings.Contains(errOut, "Docker Hub") {
		t.Errorf("stderr %q does not say Docker mirrors Docker Hub only", errOut)
	}

	path := filepath.Join(t.TempDir(), "daemon.json")
	orig := `{"data-root": "/srv/docker"}`
	os.WriteFile(path, []byte(orig), 0o600)
	for range 2 {
		if _, _, err := runApp(t, "mirror", "docker", "--daemon-json", path); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(path)
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil || got["data-root"] != "/srv/docker" || len(got["registry-mirrors"].([]any)) != 1 {
		t.Errorf("daemon.json after two merges: %s (%v)", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("daemon.json mode %v, want the file's 0600 kept", fi.Mode())
	}
	if bk, err := os.ReadFile(path + ".meshreg-backup"); err != nil || string(bk) != orig {
		t.Errorf("backup %q, %v; want the file as it was", bk, err)
	}
	os.WriteFile(path, []byte(`{"registry-mirrors": 5}`), 0o600)
	if _, _, err := runApp(t, "mirror", "docker", "--daemon-json", path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("a daemon.json with a bad registry-mirrors: %v, want an error naming the file", err)
	}
}
