// Package distribution starts CNCF Distribution v3 (`registry serve`) as a
// child process on 127.0.0.1 for tests that need a real upstream registry
// (the upstream client's tests, the mirror e2e tests), optionally with
// htpasswd Basic auth, and pushes images to it with plain HTTP calls.
// It imports nothing of meshreg's, so any test package can use it.
package distribution

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
)

// EnvBin names the binary when it is not "registry" on PATH.
const EnvBin = "MESHREG_DISTRIBUTION_BIN"

// Bin finds the registry binary: $MESHREG_DISTRIBUTION_BIN, else
// "registry" on PATH (`make unit` and `make bench` put it in .tools/bin).
func Bin() (string, error) {
	if p := os.Getenv(EnvBin); p != "" {
		return p, nil
	}
	p, err := exec.LookPath("registry")
	if err != nil {
		return "", fmt.Errorf("CNCF Distribution's `registry` binary is not on PATH (go install github.com/distribution/distribution/v3/cmd/registry@v3.0.0, or set %s): %w", EnvBin, err)
	}
	return p, nil
}

// Options describe one registry.
type Options struct {
	Bin   string            // "" = Bin()
	Dir   string            // data, config, htpasswd and log go here (required)
	Users map[string]string // htpasswd users and passwords; nil = no auth
}

// Registry is a running Distribution process.
type Registry struct {
	Addr    string // 127.0.0.1:port
	URL     string // http://127.0.0.1:port
	LogPath string

	bin, cfgPath, dir string
	cmd               *exec.Cmd
	done              chan struct{}
	err               error
}

const config = `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: %s
%s`

// Start runs the registry and waits (bounded by ctx and 30 s) until it
// answers /v2/. Stop it with Stop.
func Start(ctx context.Context, opts Options) (*Registry, error) {
	if opts.Dir == "" {
		return nil, errors.New("distribution: Options.Dir is required")
	}
	bin := opts.Bin
	if bin == "" {
		var err error
		if bin, err = Bin(); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	auth := ""
	if opts.Users != nil {
		var b strings.Builder
		for u, p := range opts.Users {
			h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "%s:%s\n", u, h)
		}
		hp := filepath.Join(opts.Dir, "htpasswd")
		if err := os.WriteFile(hp, []byte(b.String()), 0o600); err != nil {
			return nil, err
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: meshreg-test\n    path: %s\n", hp)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("distribution: find a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	cfgPath := filepath.Join(opts.Dir, "config.yml")
	secret := fmt.Sprintf("%x", time.Now().UnixNano())
	cfg := fmt.Sprintf(config, filepath.Join(opts.Dir, "data"), addr, secret, auth)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	r := &Registry{Addr: addr, URL: "http://" + addr, LogPath: filepath.Join(opts.Dir, "registry.log"),
		bin: bin, cfgPath: cfgPath, dir: opts.Dir}
	if err := r.Restart(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// Restart starts the process again (after Stop) on the same address and
// data, as an upstream that comes back after an outage.
func (r *Registry) Restart(ctx context.Context) error {
	if r.done != nil {
		select {
		case <-r.done:
		default:
			return errors.New("distribution: Restart while running; Stop first")
		}
	}
	logf, err := os.OpenFile(r.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(r.bin, "serve", r.cfgPath)
	cmd.Dir = r.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") && !strings.HasPrefix(kv, "OTEL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "OTEL_TRACES_EXPORTER=none")
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("distribution: start %s: %w", r.bin, err)
	}
	done := make(chan struct{})
	r.cmd, r.done = cmd, done
	go func() {
		r.err = cmd.Wait()
		logf.Close()
		close(done)
	}()
	if err := r.waitReady(ctx); err != nil {
		r.Stop()
		return err
	}
	return nil
}

// Request is one line of the registry's access log.
type Request struct {
	Method, Path string // Path with its query
	Status       int
	Bytes        int64 // body bytes sent
}

// Requests parses the access log (common log format lines such as
// `127.0.0.1 - - [date] "GET /v2/x/blobs/sha256:… HTTP/1.1" 200 1234 "" "ua"`)
// so a test can count what the upstream served.
func (r *Registry) Requests() ([]Request, error) {
	data, err := os.ReadFile(r.LogPath)
	if err != nil {
		return nil, err
	}
	var out []Request
	for _, line := range strings.Split(string(data), "\n") {
		_, rest, ok := strings.Cut(line, `] "`)
		if !ok || strings.HasPrefix(line, "time=") {
			continue
		}
		reqLine, rest, ok := strings.Cut(rest, `" `)
		if !ok {
			continue
		}
		f := strings.Fields(reqLine)
		g := strings.Fields(rest)
		if len(f) != 3 || len(g) < 2 {
			continue
		}
		status, err1 := strconv.Atoi(g[0])
		n, err2 := strconv.ParseInt(g[1], 10, 64)
		if err1 != nil {
			continue
		}
		if err2 != nil {
			n = 0
		}
		out = append(out, Request{Method: f[0], Path: f[1], Status: status, Bytes: n})
	}
	return out, nil
}

// BlobGETs counts the GETs of blob d that the registry answered with
// status (0 = any), from its access log.
func (r *Registry) BlobGETs(d digest.Digest, status int) (int, error) {
	reqs, err := r.Requests()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, q := range reqs {
		if q.Method == http.MethodGet && strings.Contains(q.Path, "/blobs/"+d.String()) && (status == 0 || q.Status == status) {
			n++
		}
	}
	return n, nil
}

func (r *Registry) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v2/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		select {
		case <-r.done:
			return fmt.Errorf("distribution exited before it was ready (%v); see %s", r.err, r.LogPath)
		case <-ctx.Done():
			return fmt.Errorf("distribution not ready on %s: %w; see %s", r.Addr, ctx.Err(), r.LogPath)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the process (SIGTERM, then SIGKILL after 5 s) and waits for it.
func (r *Registry) Stop() {
	if r.done == nil {
		return
	}
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// Client pushes content with plain HTTP calls and Basic auth.
type Client struct {
	URL        string
	User, Pass string // "" = anonymous
	HTTP       *http.Client
}

// Client returns a pusher for r.
func (r *Registry) Client(user, pass string) *Client {
	return &Client{URL: r.URL, User: user, Pass: pass, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

func (c *Client) do(ctx context.Context, method, u, contentType string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.User != "" {
		req.SetBasicAuth(c.User, c.Pass)
	}
	return c.HTTP.Do(req)
}

// PushBlob uploads data (POST then PUT ?digest=) and returns its descriptor.
func (c *Client) PushBlob(ctx context.Context, repo, mediaType string, data []byte) (ocispec.Descriptor, error) {
	d := digest.FromBytes(data)
	resp, err := c.do(ctx, http.MethodPost, c.URL+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return ocispec.Descriptor{}, fmt.Errorf("start upload to %s: %s", repo, resp.Status)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("upload location: %w", err)
	}
	base, _ := url.Parse(c.URL)
	loc = base.ResolveReference(loc)
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	resp, err = c.do(ctx, http.MethodPut, loc.String(), "application/octet-stream", data)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return ocispec.Descriptor{}, fmt.Errorf("finish upload of %s to %s: %s", d, repo, resp.Status)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, nil
}

// PushManifest PUTs a manifest under ref (a tag or its digest).
func (c *Client) PushManifest(ctx context.Context, repo, ref, mediaType string, body []byte) (ocispec.Descriptor, error) {
	resp, err := c.do(ctx, http.MethodPut, c.URL+"/v2/"+repo+"/manifests/"+ref, mediaType, body)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return ocispec.Descriptor{}, fmt.Errorf("push manifest %s:%s: %s %s", repo, ref, resp.Status, msg)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}, nil
}

// PushImage pushes a linux/amd64 image with one layer per element of
// layers and tags it; it returns the manifest's descriptor and bytes.
func (c *Client) PushImage(ctx context.Context, repo, tag string, layers ...[]byte) (ocispec.Descriptor, []byte, error) {
	return c.PushPlatformImage(ctx, repo, tag, ocispec.Platform{OS: "linux", Architecture: "amd64"}, layers...)
}

// PushPlatformImage is PushImage for a given platform; tag "" pushes by
// digest only (for the children of an index).
func (c *Client) PushPlatformImage(ctx context.Context, repo, tag string, p ocispec.Platform, layers ...[]byte) (ocispec.Descriptor, []byte, error) {
	cfg, _ := json.Marshal(ocispec.Image{Platform: p, RootFS: ocispec.RootFS{Type: "layers"}})
	cd, err := c.PushBlob(ctx, repo, ocispec.MediaTypeImageConfig, cfg)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cd}
	m.SchemaVersion = 2
	for _, l := range layers {
		ld, err := c.PushBlob(ctx, repo, ocispec.MediaTypeImageLayer, l)
		if err != nil {
			return ocispec.Descriptor{}, nil, err
		}
		m.Layers = append(m.Layers, ld)
	}
	body, _ := json.Marshal(m)
	ref := tag
	if ref == "" {
		ref = digest.FromBytes(body).String()
	}
	desc, err := c.PushManifest(ctx, repo, ref, m.MediaType, body)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	pp := p
	desc.Platform = &pp
	return desc, body, nil
}

// PushIndex pushes an image index over children (descriptors with
// Platform set, already pushed) under tag.
func (c *Client) PushIndex(ctx context.Context, repo, tag string, children ...ocispec.Descriptor) (ocispec.Descriptor, []byte, error) {
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children}
	idx.SchemaVersion = 2
	body, _ := json.Marshal(idx)
	desc, err := c.PushManifest(ctx, repo, tag, idx.MediaType, body)
	return desc, body, err
}
