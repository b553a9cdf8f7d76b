package upstream

import (
	"bytes"
	"context"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestFileCredentialsFormats(t *testing.T) {
	tests := []struct {
		name   string
		file   string
		lookup string
		user   string
		pass   string
		ok     bool
	}{
		{"host with auth", `{"auths":{"ghcr.io":{"auth":"` + b64("u1:p1") + `"}}}`, "ghcr.io", "u1", "p1", true},
		{"username and password", `{"auths":{"quay.io":{"username":"u2","password":"p2"}}}`, "quay.io", "u2", "p2", true},
		{"auth beats username", `{"auths":{"quay.io":{"auth":"` + b64("a:b") + `","username":"x","password":"y"}}}`, "quay.io", "a", "b", true},
		{"password with colon", `{"auths":{"r.example":{"auth":"` + b64("u:p:q") + `"}}}`, "r.example", "u", "p:q", true},
		{"url key", `{"auths":{"https://r.example:5000/v2/":{"auth":"` + b64("u:p") + `"}}}`, "r.example:5000", "u", "p", true},
		{"host and port", `{"auths":{"127.0.0.1:5999":{"auth":"` + b64("u:p") + `"}}}`, "127.0.0.1:5999", "u", "p", true},
		{"port matters", `{"auths":{"127.0.0.1:5999":{"auth":"` + b64("u:p") + `"}}}`, "127.0.0.1:6000", "", "", false},
		{"case-insensitive", `{"auths":{"GHCR.io":{"auth":"` + b64("u:p") + `"}}}`, "ghcr.io", "u", "p", true},
		{"docker hub v1 key", `{"auths":{"https://index.docker.io/v1/":{"auth":"` + b64("hub:tok") + `"}}}`, "docker.io", "hub", "tok", true},
		{"docker hub registry-1", `{"auths":{"registry-1.docker.io":{"auth":"` + b64("hub:tok") + `"}}}`, "docker.io", "hub", "tok", true},
		{"docker hub looked up as index", `{"auths":{"docker.io":{"auth":"` + b64("hub:tok") + `"}}}`, "index.docker.io", "hub", "tok", true},
		{"docker hub v1 key wins", `{"auths":{"docker.io":{"auth":"` + b64("a:1") + `"},"https://index.docker.io/v1/":{"auth":"` + b64("b:2") + `"}}}`, "docker.io", "b", "2", true},
		{"empty entry skipped", `{"auths":{"ghcr.io":{}},"credsStore":"desktop"}`, "ghcr.io", "", "", false},
		{"no auths", `{}`, "ghcr.io", "", "", false},
		{"other registry", `{"auths":{"ghcr.io":{"auth":"` + b64("u:p") + `"}}}`, "quay.io", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := NewFileCredentials(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			u, p, ok := c.Lookup(tc.lookup)
			if u != tc.user || p != tc.pass || ok != tc.ok {
				t.Fatalf("Lookup(%q) = %q, %q, %v; want %q, %q, %v", tc.lookup, u, p, ok, tc.user, tc.pass, tc.ok)
			}
		})
	}
}

func TestFileCredentialsBadFilesRefusedWithoutSecrets(t *testing.T) {
	for name, content := range map[string]string{
		"not json":        `{"auths": {"ghcr.io": {"auth": "c2VjcmV0`,
		"auth not base64": `{"auths":{"ghcr.io":{"auth":"s3cret!!"}}}`,
		"auth no colon":   `{"auths":{"ghcr.io":{"auth":"` + b64("s3cretnocolon") + `"}}}`,
		"wrong type":      `{"auths":{"ghcr.io":{"password":12345}}}`,
		"empty key":       `{"auths":{"":{"auth":"` + b64("u:s3cret") + `"}}}`,
		"too large":       `{"x":"` + strings.Repeat("a", maxCredentialsFileBytes) + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.json")
			os.WriteFile(path, []byte(content), 0o600)
			_, err := NewFileCredentials(path, nil)
			if err == nil {
				t.Fatal("a bad credentials file was accepted")
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "c2VjcmV0") {
				t.Errorf("error %q quotes the file's secrets", err)
			}
			if !strings.Contains(err.Error(), "--upstream-credentials") || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file and the flag", err)
			}
		})
	}
	if _, err := NewFileCredentials(filepath.Join(t.TempDir(), "missing.json"), nil); err == nil {
		t.Fatal("a missing credentials file was accepted")
	}
}

// recordingHandler is a test-only slog handler keeping records.
type recordingHandler struct {
	mu   sync.Mutex
	recs []slog.Record
	buf  bytes.Buffer
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	h.buf.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool { h.buf.WriteString(" " + a.String()); return true })
	h.buf.WriteString("\n")
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) count(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.recs {
		if r.Level == level {
			n++
		}
	}
	return n
}

func TestFileCredentialsReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	write := func(content string, mtime time.Time) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(path, mtime, mtime)
	}
	base := time.Now().Add(-time.Hour)
	write(`{"auths":{"ghcr.io":{"auth":"`+b64("u:old")+`"}}}`, base)
	logs := &recordingHandler{}
	c, err := NewFileCredentials(path, slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	c.now, c.checkedAt = clock.Now, clock.Now()
	lookup := func() string {
		_, p, _ := c.Lookup("ghcr.io")
		return p
	}

	write(`{"auths":{"ghcr.io":{"auth":"`+b64("u:new")+`"}}}`, base.Add(time.Minute))
	if got := lookup(); got != "old" {
		t.Fatalf("re-read within 2 s: password %q, want old", got)
	}
	clock.Advance(2 * time.Second)
	if got := lookup(); got != "new" {
		t.Fatalf("after 2 s: password %q, want new", got)
	}

	// A bad file keeps the last good credentials and logs one ERROR.
	write(`{"auths":`, base.Add(2*time.Minute))
	for i := 0; i < 3; i++ {
		clock.Advance(3 * time.Second)
		if got := lookup(); got != "new" {
			t.Fatalf("bad file: password %q, want the last good (new)", got)
		}
	}
	if n := logs.count(slog.LevelError); n != 1 {
		t.Fatalf("%d ERROR lines for one bad file, want 1", n)
	}

	// A Kubernetes secret update: the file is a symlink that is swapped.
	data1 := filepath.Join(dir, "..data1")
	os.Mkdir(data1, 0o700)
	os.WriteFile(filepath.Join(data1, "config.json"), []byte(`{"auths":{"ghcr.io":{"auth":"`+b64("u:k8s")+`"}}}`), 0o600)
	tmp := filepath.Join(dir, "link.tmp")
	if err := os.Symlink(filepath.Join(data1, "config.json"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(3 * time.Second)
	if got := lookup(); got != "k8s" {
		t.Fatalf("after the symlink swap: password %q, want k8s", got)
	}
	if strings.Contains(logs.buf.String(), "old") || strings.Contains(logs.buf.String(), "k8s") ||
		strings.Contains(logs.buf.String(), b64("u:new")) {
		t.Errorf("logs carry a secret:\n%s", logs.buf.String())
	}
}

// TestFileCredentialsWithRegistry: the store feeds the token flow, and a
// rotated password is used without a restart.
func TestFileCredentialsWithRegistry(t *testing.T) {
	f := newFakeRegistry(t)
	ts := newTokenServer(t)
	ts.user, ts.pass = "alice", "one"
	f.auth = bearerAuth(f, ts)
	f.addImage("team/app", "v1", []byte("l"))
	f.addImage("team/other", "v1", []byte("m"))
	path := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(path, []byte(`{"auths":{"http://fake.example/v2/":{"username":"alice","password":"one"}}}`), 0o600)
	creds, err := NewFileCredentials(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	creds.now, creds.checkedAt = clock.Now, clock.Now()
	r := newTestRegistry(t, f, func(c *Config) { c.Credentials = creds })
	if _, err := r.Resolve(context.Background(), "team/app", "v1"); err != nil {
		t.Fatal(err)
	}
	ts.mu.Lock()
	ts.pass = "two"
	ts.mu.Unlock()
	os.WriteFile(path, []byte(`{"auths":{"fake.example":{"username":"alice","password":"two"}}}`), 0o600)
	os.Chtimes(path, time.Now().Add(time.Minute), time.Now().Add(time.Minute))
	clock.Advance(3 * time.Second)
	if _, err := r.Resolve(context.Background(), "team/other", "v1"); err != nil {
		t.Fatalf("after rotating the password in the file: %v", err)
	}
}
