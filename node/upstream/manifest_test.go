package upstream

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestManifestByTagAndDigest(t *testing.T) {
	f := newFakeRegistry(t)
	want := f.addImage("a/b", "v1", []byte("layer"))
	obs := &countingObserver{}
	r := newTestRegistry(t, f, func(c *Config) { c.Observer = obs })
	for _, ref := range []string{"v1", want.Digest.String()} {
		desc, body, err := r.Manifest(context.Background(), "a/b", ref, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if desc.Digest != want.Digest || desc.MediaType != ocispec.MediaTypeImageManifest || digest.FromBytes(body) != want.Digest {
			t.Fatalf("Manifest(%s) = %+v", ref, desc)
		}
	}
	if obs.bytes["manifest"] != 2*want.Size {
		t.Errorf("observer counted %d manifest bytes, want %d", obs.bytes["manifest"], 2*want.Size)
	}
}

func TestManifestDigestMismatchRefused(t *testing.T) {
	real := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`)
	evil := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","x":1}`)
	tests := []struct {
		name string
		ref  string
		dcd  string // Docker-Content-Digest sent
		body []byte
	}{
		{"header disagrees with body", "t", digest.FromBytes(real).String(), evil},
		{"body is not the digest asked for", digest.FromBytes(real).String(), "", evil},
		{"header and body agree but not with the ref", digest.FromBytes(real).String(), digest.FromBytes(evil).String(), evil},
		{"malformed header", "t", "sha256:nothex", real},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
				if tc.dcd != "" {
					w.Header().Set("Docker-Content-Digest", tc.dcd)
				}
				w.Write(tc.body)
				return true
			}
			r := newTestRegistry(t, f, nil)
			_, body, err := r.Manifest(context.Background(), "a/b", tc.ref, 1<<20)
			if !errors.Is(err, ErrBadResponse) || body != nil {
				t.Fatalf("Manifest = %d bytes, %v; want ErrBadResponse and no body", len(body), err)
			}
		})
	}
}

func TestManifestOversizeRefused(t *testing.T) {
	big := []byte(`{"mediaType":"application/vnd.oci.image.manifest.v1+json","pad":"` + strings.Repeat("x", 10000) + `"}`)
	for _, chunked := range []bool{false, true} {
		t.Run("chunked="+strconv.FormatBool(chunked), func(t *testing.T) {
			f := newFakeRegistry(t)
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
				if !chunked {
					w.Header().Set("Content-Length", strconv.Itoa(len(big)))
				}
				w.Write(big[:100])
				w.(http.Flusher).Flush()
				w.Write(big[100:])
				return true
			}
			r := newTestRegistry(t, f, nil)
			_, _, err := r.Manifest(context.Background(), "a/b", "t", 4096)
			if !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "4096-byte limit") {
				t.Fatalf("oversize manifest: %v, want ErrBadResponse naming the limit", err)
			}
			// At the limit it is accepted.
			if _, _, err := r.Manifest(context.Background(), "a/b", "t", int64(len(big))); err != nil {
				t.Fatalf("manifest of exactly the limit: %v", err)
			}
		})
	}
}

func TestManifestMediaTypeFromBody(t *testing.T) {
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}`)
	f := newFakeRegistry(t)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Write(body)
		return true
	}
	r := newTestRegistry(t, f, nil)
	desc, _, err := r.Manifest(context.Background(), "a/b", "t", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if desc.MediaType != mediaTypeDockerManifestList || desc.Digest != digest.FromBytes(body) || desc.Size != int64(len(body)) {
		t.Fatalf("desc = %+v", desc)
	}
}

func TestResolveWithoutDigestHeaderFallsBackToGet(t *testing.T) {
	f := newFakeRegistry(t)
	want := f.addImage("a/b", "t", []byte("x"))
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodHead {
			return false
		}
		w.Header().Set("Content-Type", want.MediaType)
		w.Header().Set("Content-Length", strconv.FormatInt(want.Size, 10))
		return true // no Docker-Content-Digest
	}
	r := newTestRegistry(t, f, nil)
	got, err := r.Resolve(context.Background(), "a/b", "t")
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want.Digest {
		t.Fatalf("digest %s, want %s", got.Digest, want.Digest)
	}
}
