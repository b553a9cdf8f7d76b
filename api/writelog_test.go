package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// logBuffer collects a handler's JSON log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// take returns the records written since the last take at level or above,
// and forgets them.
func (l *logBuffer) take(t *testing.T, level slog.Level) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON log line: %s", line)
		}
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(m["level"].(string))); err != nil {
			t.Fatal(err)
		}
		if lv >= level {
			out = append(out, m)
		}
	}
	l.b.Reset()
	return out
}

// newLoggedRegistry is a real node whose HTTP handler logs JSON to the
// returned buffer at DEBUG and above.
func newLoggedRegistry(t *testing.T) (*registry, *logBuffer) {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	n, err := node.Open(cfg, tlog.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	buf := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := api.New(api.DefaultConfig(), n, n, api.NewMetrics(prometheus.NewRegistry()), log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	r := &registry{t: t, url: srv.URL, dir: cfg.DataDir, node: n, srv: srv}
	t.Cleanup(r.close)
	return r, buf
}

// expectLines checks that the INFO (and above) lines logged are exactly
// want, in order: each with the message and at least the attributes given.
func expectLines(t *testing.T, step string, got []map[string]any, want ...map[string]any) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: logged %d INFO lines, want %d: %v", step, len(got), len(want), got)
	}
	for i, w := range want {
		for k, v := range w {
			if fmt.Sprint(got[i][k]) != fmt.Sprint(v) {
				t.Errorf("%s: line %d: %s = %v, want %v (line %v)", step, i, k, got[i][k], v, got[i])
			}
		}
	}
}

// TestOneInfoLinePerAcceptedWrite: every push, upload, mount and delete
// that succeeds leaves exactly one INFO line naming what changed and the
// client; chunks, reads and refused writes leave none.
func TestOneInfoLinePerAcceptedWrite(t *testing.T) {
	t.Parallel()
	r, logs := newLoggedRegistry(t)
	const client = "127.0.0.1"

	// A monolithic upload.
	cfgBlob := []byte(`{"architecture":"amd64","os":"linux"}`)
	cd := r.pushBlob("team/app", cfgBlob)
	expectLines(t, "monolithic upload", logs.take(t, slog.LevelInfo), map[string]any{
		"msg": "blob uploaded", "repository": "team/app", "digest": cd, "size": len(cfgBlob), "client": client})

	// A chunked upload: one line when it is committed, none per chunk.
	layer := randomBytes(t, 3000)
	ld := digest.FromBytes(layer)
	resp, body := r.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 202, "")
	loc := resp.Header.Get("Location")
	resp, body = r.do("PATCH", loc, layer[:1000], "Content-Range", "0-999")
	expect(t, resp, body, 202, "")
	resp, body = r.do("PATCH", loc, layer[1000:2000], "Content-Range", "1000-1999")
	expect(t, resp, body, 202, "")
	expectLines(t, "chunks", logs.take(t, slog.LevelInfo))
	resp, body = r.do("PUT", loc+"?digest="+ld.String(), layer[2000:], "Content-Range", "2000-2999")
	expect(t, resp, body, 201, "")
	expectLines(t, "chunked upload", logs.take(t, slog.LevelInfo), map[string]any{
		"msg": "blob uploaded", "repository": "team/app", "digest": ld, "size": len(layer), "client": client})

	// A cross-repository mount.
	resp, body = r.do("POST", "/v2/team/copy/blobs/uploads/?mount="+ld.String()+"&from=team/app", nil)
	expect(t, resp, body, 201, "")
	expectLines(t, "mount", logs.take(t, slog.LevelInfo), map[string]any{
		"msg": "blob mounted", "repository": "team/copy", "from": "team/app", "digest": ld, "client": client})

	// A manifest pushed by tag, then one by digest with tags.
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cd, Size: int64(len(cfgBlob))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: ld, Size: int64(len(layer))}},
	}
	m.SchemaVersion = 2
	mb, _ := json.Marshal(m)
	md := digest.FromBytes(mb)
	resp, body = r.pushManifest("team/app", "v1", ocispec.MediaTypeImageManifest, mb)
	expect(t, resp, body, 201, "")
	expectLines(t, "push by tag", logs.take(t, slog.LevelInfo), map[string]any{
		"msg": "manifest pushed", "repository": "team/app", "reference": "v1", "digest": md,
		"media_type": ocispec.MediaTypeImageManifest, "size": len(mb), "client": client})
	resp, body = r.pushManifest("team/app", md.String()+"?tag=a&tag=b", ocispec.MediaTypeImageManifest, mb)
	expect(t, resp, body, 201, "")
	expectLines(t, "push by digest with tags", logs.take(t, slog.LevelInfo), map[string]any{
		"msg": "manifest pushed", "repository": "team/app", "reference": md, "digest": md, "tags": "[a b]", "client": client})

	// Refused writes and reads leave no INFO line.
	resp, body = r.pushManifest("team/app", "broken", ocispec.MediaTypeImageManifest, []byte("{"))
	expect(t, resp, body, 400, "MANIFEST_INVALID")
	resp, body = r.do("GET", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, 200, "")
	resp, body = r.do("GET", "/v2/team/app/blobs/"+ld.String(), nil)
	expect(t, resp, body, 200, "")
	resp, body = r.do("DELETE", "/v2/team/app/manifests/no-such-tag", nil)
	expect(t, resp, body, 404, "")
	expectLines(t, "reads and refused writes", logs.take(t, slog.LevelInfo))

	// Deletes: a tag, a manifest, a blob.
	resp, body = r.do("DELETE", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, http.StatusAccepted, "")
	expectLines(t, "tag delete", logs.take(t, slog.LevelInfo), map[string]any{
		"msg": "tag deleted", "repository": "team/app", "reference": "v1", "client": client})
	resp, body = r.do("DELETE", "/v2/team/app/manifests/"+md.String(), nil)
	expect(t, resp, body, http.StatusAccepted, "")
	expectLines(t, "manifest delete", logs.take(t, slog.LevelInfo), map[string]any{
		"msg": "manifest deleted", "repository": "team/app", "reference": md, "client": client})
	resp, body = r.do("DELETE", "/v2/team/app/blobs/"+ld.String(), nil)
	expect(t, resp, body, http.StatusAccepted, "")
	expectLines(t, "blob delete", logs.take(t, slog.LevelInfo), map[string]any{
		"msg": "blob deleted", "repository": "team/app", "digest": ld, "client": client})
}
