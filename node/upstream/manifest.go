package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest media types this client asks for.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

var manifestAccept = []string{
	ocispec.MediaTypeImageIndex,
	ocispec.MediaTypeImageManifest,
	mediaTypeDockerManifestList,
	mediaTypeDockerManifest,
}

// DefaultMaxManifest is a manifest size limit for callers without one
// (CNCF Distribution's default is 4 MiB).
const DefaultMaxManifest = 4 << 20

// Resolve HEADs a manifest (tag or digest) and returns its descriptor
// (digest from Docker-Content-Digest, media type, size); HEAD is what
// Docker Hub does not count against pull limits. An upstream that sends no
// Docker-Content-Digest for a tag is asked with a GET instead (bounded by
// DefaultMaxManifest), and the digest computed.
func (r *Registry) Resolve(ctx context.Context, repo, ref string) (ocispec.Descriptor, error) {
	if err := r.checkRepoRef("resolve", repo, ref, false); err != nil {
		return ocispec.Descriptor{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.reqTimeout)
	defer cancel()
	req := &request{op: "resolve", method: http.MethodHead, repo: repo, ref: ref,
		path: pathFor(repo, "manifests", ref), header: http.Header{"Accept": manifestAccept}, ctx: ctx}
	resp, err := r.do(req)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	drain(resp)
	var want digest.Digest
	if d, err := digest.Parse(ref); err == nil {
		want = d
	}
	desc := ocispec.Descriptor{MediaType: mediaTypeOf(resp.Header.Get("Content-Type")), Size: -1}
	if n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
		desc.Size = n
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		got, err := digest.Parse(h)
		if err != nil {
			return ocispec.Descriptor{}, r.bad(req, "Docker-Content-Digest header is not a digest")
		}
		if want != "" && got != want {
			return ocispec.Descriptor{}, r.bad(req, fmt.Sprintf("Docker-Content-Digest %s is not the digest asked for", got))
		}
		desc.Digest = got
	} else if want != "" {
		desc.Digest = want
	}
	if desc.Digest == "" || desc.Size < 0 || desc.MediaType == "" {
		// Not enough from the HEAD: GET it (counted as a pull by Docker
		// Hub, which always sends the header, so this is for others).
		d, _, err := r.Manifest(ctx, repo, ref, DefaultMaxManifest)
		return d, err
	}
	return desc, nil
}

// Manifest GETs a manifest, refusing bodies over max bytes; verifies the
// body's digest against the digest asked for (by-digest refs) and against
// Docker-Content-Digest when present. The descriptor's media type is the
// response's Content-Type, else the body's mediaType field.
func (r *Registry) Manifest(ctx context.Context, repo, ref string, limit int64) (ocispec.Descriptor, []byte, error) {
	if err := r.checkRepoRef("manifest", repo, ref, false); err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	if limit <= 0 {
		limit = DefaultMaxManifest
	}
	ctx, cancel := context.WithTimeout(ctx, r.reqTimeout)
	defer cancel()
	req := &request{op: "manifest", method: http.MethodGet, repo: repo, ref: ref,
		path: pathFor(repo, "manifests", ref), header: http.Header{"Accept": manifestAccept}, ctx: ctx}
	resp, err := r.do(req)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return ocispec.Descriptor{}, nil, r.bad(req, fmt.Sprintf("manifest is %d bytes, over the %d-byte limit", resp.ContentLength, limit))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	r.obs.OnBytes("manifest", int64(len(body)))
	if err != nil {
		e := r.newError(req, ErrUnavailable, resp.StatusCode, "reading the manifest body failed", err)
		r.recordError(e)
		return ocispec.Descriptor{}, nil, e
	}
	if int64(len(body)) > limit {
		return ocispec.Descriptor{}, nil, r.bad(req, fmt.Sprintf("manifest is over the %d-byte limit", limit))
	}
	// Verify: against the digest asked for, and Docker-Content-Digest.
	var checks []digest.Digest
	if want, err := digest.Parse(ref); err == nil {
		checks = append(checks, want)
	}
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
		got, err := digest.Parse(h)
		if err != nil {
			return ocispec.Descriptor{}, nil, r.bad(req, "Docker-Content-Digest header is not a digest")
		}
		checks = append(checks, got)
	}
	dgst := digest.FromBytes(body)
	for _, want := range checks {
		if !want.Algorithm().Available() {
			return ocispec.Descriptor{}, nil, r.bad(req, fmt.Sprintf("digest algorithm %s is not supported", want.Algorithm()))
		}
		if got := want.Algorithm().FromBytes(body); got != want {
			return ocispec.Descriptor{}, nil, r.bad(req, fmt.Sprintf("manifest body has digest %s, not %s: refused", got, want))
		}
		dgst = want
	}
	mt := mediaTypeOf(resp.Header.Get("Content-Type"))
	if mt == "" || mt == "application/json" || mt == "application/octet-stream" || mt == "text/plain" {
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(body, &probe) == nil && probe.MediaType != "" {
			mt = clip(probe.MediaType, 255)
		}
	}
	if mt == "" {
		return ocispec.Descriptor{}, nil, r.bad(req, "manifest has no media type (neither Content-Type nor mediaType)")
	}
	return ocispec.Descriptor{MediaType: mt, Digest: dgst, Size: int64(len(body))}, body, nil
}

// bad records and returns an ErrBadResponse for req.
func (r *Registry) bad(req *request, msg string) error {
	e := r.newError(req, ErrBadResponse, 0, msg, nil)
	r.recordError(e)
	return e
}

func mediaTypeOf(ct string) string {
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return clip(mt, 255)
}
