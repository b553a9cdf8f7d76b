package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"
)

// Client is a minimal OCI distribution client over plain HTTP, enough to
// push and pull blobs and manifests with full control over each request
// (stream sizes, chunking, aborting mid-body). Tests use it where a real
// client cannot do what they need; the benchmark uses it for both
// registries alike.
type Client struct {
	Base string // http://host:port
	HTTP *http.Client
}

// NewClient returns a client for the registry at base (http://host:port).
func NewClient(base string) *Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	tr.DisableCompression = true
	return &Client{Base: base, HTTP: &http.Client{Transport: tr, Timeout: 10 * time.Minute}}
}

// HTTPError is an unexpected response: the request and what came back.
type HTTPError struct {
	Method, URL string
	Want        []int
	Status      int
	Header      http.Header
	Body        string // at most 4 KiB
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s %s: want status %v, got %d; body: %s", e.Method, e.URL, e.Want, e.Status, e.Body)
}

// StatusOf returns the HTTP status of an *HTTPError in err's chain, or 0.
func StatusOf(err error) int {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status
	}
	return 0
}

func (c *Client) do(req *http.Request, want ...int) (*http.Response, error) {
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	for _, w := range want {
		if resp.StatusCode == w {
			return resp, nil
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	return nil, &HTTPError{Method: req.Method, URL: req.URL.String(), Want: want, Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

func (c *Client) url(path string) string { return c.Base + path }

// resolve makes an upload Location absolute.
func (c *Client) resolve(loc string) (*url.URL, error) {
	base, err := url.Parse(c.Base + "/")
	if err != nil {
		return nil, err
	}
	u, err := base.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("bad Location %q: %w", loc, err)
	}
	return u, nil
}

// StartUpload opens an upload session (POST /v2/<repo>/blobs/uploads/) and
// returns its absolute location.
func (c *Client) StartUpload(ctx context.Context, repo string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v2/"+repo+"/blobs/uploads/"), nil)
	if err != nil {
		return "", err
	}
	resp, err := c.do(req, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return c.location(resp)
}

func (c *Client) location(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("%s %s: %s without Location", resp.Request.Method, resp.Request.URL, resp.Status)
	}
	u, err := c.resolve(loc)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

// PatchUpload sends one chunk of size bytes starting at offset start to
// an upload session and returns the session's next location.
func (c *Client) PatchUpload(ctx context.Context, location string, start, size int64, body io.Reader) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, location, body)
	if err != nil {
		return "", err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", start, start+size-1))
	resp, err := c.do(req, http.StatusAccepted)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return c.location(resp)
}

// FinishUpload closes an upload session with PUT ?digest=d and an optional
// final body of size bytes (size 0, body nil: no body).
func (c *Client) FinishUpload(ctx context.Context, location string, d digest.Digest, size int64, body io.Reader) error {
	u, err := c.resolve(location)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	if body == nil {
		body = http.NoBody
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(req, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != d.String() {
		return fmt.Errorf("PUT %s: Docker-Content-Digest %s, want %s", u, got, d)
	}
	return nil
}

// PushBlob uploads a blob monolithically: POST, then PUT ?digest= with the
// whole body streamed from r (size bytes).
func (c *Client) PushBlob(ctx context.Context, repo string, d digest.Digest, size int64, r io.Reader) error {
	loc, err := c.StartUpload(ctx, repo)
	if err != nil {
		return err
	}
	return c.FinishUpload(ctx, loc, d, size, r)
}

// PushBytes uploads b as a blob and returns its digest.
func (c *Client) PushBytes(ctx context.Context, repo string, b []byte) (digest.Digest, error) {
	d := digest.FromBytes(b)
	return d, c.PushBlob(ctx, repo, d, int64(len(b)), bytes.NewReader(b))
}

// HeadBlob returns the status of HEAD /v2/<repo>/blobs/<d> and the
// Content-Length it announced. Only transport errors are errors.
func (c *Client) HeadBlob(ctx context.Context, repo string, d digest.Digest) (int, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, c.url("/v2/"+repo+"/blobs/"+d.String()), nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("HEAD %s: %w", req.URL, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.ContentLength, nil
}

// GetBlob opens GET /v2/<repo>/blobs/<d> (200 expected).
func (c *Client) GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v2/"+repo+"/blobs/"+d.String()), nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.do(req, http.StatusOK)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// VerifyBlob downloads a blob, hashing it as it streams, and checks its
// digest and, if size >= 0, its length.
func (c *Client) VerifyBlob(ctx context.Context, repo string, d digest.Digest, size int64) error {
	body, _, err := c.GetBlob(ctx, repo, d)
	if err != nil {
		return err
	}
	defer body.Close()
	v := d.Verifier()
	n, err := io.CopyBuffer(v, body, make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("GET blob %s: after %d bytes: %w", d, n, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("GET blob %s: %d bytes, want %d", d, n, size)
	}
	if !v.Verified() {
		return fmt.Errorf("GET blob %s: the %d bytes served do not hash to the digest", d, n)
	}
	return nil
}

// PutManifest uploads a manifest under ref (a tag or its digest) and
// returns the digest the registry reports.
func (c *Client) PutManifest(ctx context.Context, repo, ref, mediaType string, body []byte) (digest.Digest, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.url("/v2/"+repo+"/manifests/"+ref), bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", mediaType)
	resp, err := c.do(req, http.StatusCreated)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	want := digest.FromBytes(body)
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != want.String() {
		return "", fmt.Errorf("PUT manifest %s:%s: Docker-Content-Digest %s, want %s", repo, ref, got, want)
	}
	return want, nil
}

// ManifestAccept lists the manifest media types the client accepts.
const ManifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// GetManifest fetches a manifest by tag or digest; it returns the body, the
// Content-Type and the Docker-Content-Digest header.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) ([]byte, string, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url("/v2/"+repo+"/manifests/"+ref), nil)
	if err != nil {
		return nil, "", "", err
	}
	req.Header.Set("Accept", ManifestAccept)
	resp, err := c.do(req, http.StatusOK)
	if err != nil {
		return nil, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, "", "", err
	}
	return b, resp.Header.Get("Content-Type"), resp.Header.Get("Docker-Content-Digest"), nil
}

// Get performs a GET of path (relative to the base) and returns status,
// headers and up to 16 MiB of body.
func (c *Client) Get(ctx context.Context, path string, header http.Header) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(path), nil)
	if err != nil {
		return 0, nil, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, resp.Header, b, err
}
