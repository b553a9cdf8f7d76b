package api

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// mirrorFake is a Registry (test only) that records the repository each
// read was asked for and holds the "local" content listed in local.
type mirrorFake struct {
	Registry // nil: other methods are not called
	local    map[string]bool
	asked    string
}

func (f *mirrorFake) HasManifest(repo, ref string) bool         { return f.local[repo+":"+ref] }
func (f *mirrorFake) HasBlob(repo string, d digest.Digest) bool { return f.local[repo+"@"+d.String()] }

func (f *mirrorFake) GetManifest(_ context.Context, repo, ref string) (Manifest, error) {
	f.asked = repo
	body := []byte("{}")
	return Manifest{Digest: digest.FromBytes(body), MediaType: "application/vnd.oci.image.index.v1+json", Body: body, Warning: warningFor(repo)}, nil
}

func warningFor(repo string) string {
	if strings.HasSuffix(repo, "/stale") {
		return `110 - "stale: upstream docker.io unreachable"`
	}
	return ""
}

func (f *mirrorFake) StatBlob(_ context.Context, repo string, d digest.Digest) (int64, error) {
	f.asked = repo
	return 3, nil
}

func (f *mirrorFake) OpenBlob(_ context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	f.asked = repo
	return nopReadSeekCloser{strings.NewReader("abc")}, 3, nil
}

type nopReadSeekCloser struct{ *strings.Reader }

func (nopReadSeekCloser) Close() error { return nil }

// TestMirrorRouting is the routing table of a node mirroring docker.io
// (the default upstream) and 127.0.0.1:5999: which repository a request
// reads, or how it is refused.
func TestMirrorRouting(t *testing.T) {
	t.Parallel()
	blob := digest.FromString("abc").String()
	cases := []struct {
		name, method, path string
		asked              string // repository the registry was asked for
		status             int
		code, msg          string
	}{
		{"ns names an upstream", "GET", "/v2/library/nginx/manifests/1.27?ns=docker.io", "docker.io/library/nginx", 200, "", ""},
		{"ns on a HEAD", "HEAD", "/v2/library/nginx/manifests/1.27?ns=docker.io", "docker.io/library/nginx", 200, "", ""},
		{"ns with a port", "GET", "/v2/team/app/manifests/v1?ns=127.0.0.1:5999", "127.0.0.1-5999/team/app", 200, "", ""},
		{"Docker Hub official image gets library/", "GET", "/v2/nginx/manifests/1.27?ns=docker.io", "docker.io/library/nginx", 200, "", ""},
		{"other upstreams get no library/", "GET", "/v2/app/manifests/v1?ns=127.0.0.1:5999", "127.0.0.1-5999/app", 200, "", ""},
		{"blob with ns", "GET", "/v2/library/nginx/blobs/" + blob + "?ns=docker.io", "docker.io/library/nginx", 200, "", ""},
		{"path form: GET without ns means the default", "GET", "/v2/library/nginx/manifests/1.27", "docker.io/library/nginx", 200, "", ""},
		{"path form: manifest HEAD without ns means the default", "HEAD", "/v2/library/nginx/manifests/1.27", "docker.io/library/nginx", 200, "", ""},
		{"path form: blob GET without ns means the default", "GET", "/v2/library/nginx/blobs/" + blob, "docker.io/library/nginx", 200, "", ""},
		{"path form: blob HEAD without ns is the cluster's own (pushes)", "HEAD", "/v2/library/nginx/blobs/" + blob, "library/nginx", 200, "", ""},
		{"explicit namespace in the path", "GET", "/v2/docker.io/library/nginx/manifests/1.27", "docker.io/library/nginx", 200, "", ""},
		{"explicit namespace with a port", "HEAD", "/v2/127.0.0.1-5999/app/blobs/" + blob, "127.0.0.1-5999/app", 200, "", ""},
		{"pushed content is served first", "GET", "/v2/own/app/manifests/v1?ns=docker.io", "own/app", 200, "", ""},
		{"pushed blob is served first", "GET", "/v2/own/app/blobs/" + blob + "?ns=docker.io", "own/app", 200, "", ""},
		{"pushed content with an unknown ns", "GET", "/v2/own/app/manifests/v1?ns=evil.example", "own/app", 200, "", ""},
		{"unknown ns refused", "GET", "/v2/library/nginx/manifests/1.27?ns=evil.example", "", 404, "NAME_UNKNOWN", "names no upstream it mirrors (configured: docker.io, 127.0.0.1:5999)"},
		{"write with ns refused", "PUT", "/v2/library/nginx/manifests/1.27?ns=docker.io", "", 405, "UNSUPPORTED", "a mirror is read-only"},
		{"delete with ns refused", "DELETE", "/v2/library/nginx/blobs/" + blob + "?ns=docker.io", "", 405, "UNSUPPORTED", "a mirror is read-only"},
		{"upload with ns refused", "POST", "/v2/library/nginx/blobs/uploads/?ns=docker.io", "", 405, "UNSUPPORTED", "a mirror is read-only"},
		{"push into an upstream's namespace refused", "PUT", "/v2/docker.io/library/nginx/manifests/1.27", "", 403, "DENIED", "is the mirror of upstream docker.io"},
		{"upload into an upstream's namespace refused", "POST", "/v2/127.0.0.1-5999/app/blobs/uploads/", "", 403, "DENIED", "is the mirror of upstream 127.0.0.1:5999"},
		{"delete in an upstream's namespace refused", "DELETE", "/v2/docker.io/library/nginx/manifests/1.27", "", 403, "DENIED", "mirror of upstream docker.io"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			reg := &mirrorFake{local: map[string]bool{"own/app:v1": true, "own/app@" + blob: true}}
			cfg := DefaultConfig()
			cfg.Mirror = Mirroring{Upstreams: []string{"docker.io", "127.0.0.1:5999"}, Default: "docker.io"}
			h, err := New(cfg, reg, nil, nil, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, strings.NewReader("")))
			if rec.Code != c.status || reg.asked != c.asked {
				t.Fatalf("%s %s: status %d, registry asked for %q; want %d, %q (body %s)", c.method, c.path, rec.Code, reg.asked, c.status, c.asked, rec.Body)
			}
			if c.code == "" {
				return
			}
			var body errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 {
				t.Fatalf("error body %q: %v", rec.Body, err)
			}
			if e := body.Errors[0]; e.Code != c.code || !strings.Contains(e.Message, c.msg) {
				t.Fatalf("error %s %q, want %s containing %q", e.Code, e.Message, c.code, c.msg)
			}
		})
	}
}

// A manifest served from what the cluster knew while its upstream was
// unreachable carries the registry's Warning.
func TestMirrorWarningHeader(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig()
	cfg.Mirror = Mirroring{Upstreams: []string{"docker.io"}}
	h, err := New(cfg, &mirrorFake{}, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v2/team/stale/manifests/v1?ns=docker.io", nil))
	if got := rec.Header().Get("Warning"); rec.Code != 200 || !strings.HasPrefix(got, `110 - "stale: upstream docker.io unreachable`) {
		t.Fatalf("status %d, Warning %q", rec.Code, got)
	}
}
