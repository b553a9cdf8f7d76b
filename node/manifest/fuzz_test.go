package manifest

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FuzzParseManifest: whatever the content type and body, Parse answers
// without panicking; a refusal is an *Error of kind ErrInvalid, and what
// it accepts has a supported media type and valid digests. The seed corpus
// (testdata/fuzz/FuzzParseManifest) holds real manifests of several tools.
func FuzzParseManifest(f *testing.F) {
	f.Add("", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"`+cfgDigest+`","size":2},"layers":[]}`)
	f.Add(ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"manifests":[{"mediaType":"a/b","digest":"`+cfgDigest+`","size":2}]}`)
	f.Add("application/json", `{"schemaVersion":2,"subject":null}`)
	f.Fuzz(func(t *testing.T, contentType, body string) {
		p, err := Parse(contentType, []byte(body))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error that is not an *Error of kind ErrInvalid: %v", err)
			}
			return
		}
		if _, ok := kinds[p.MediaType]; !ok {
			t.Fatalf("accepted unsupported media type %q", p.MediaType)
		}
		for _, d := range append(p.Blobs, p.Children...) {
			if d.Digest.Validate() != nil {
				t.Fatalf("accepted invalid digest %q", d.Digest)
			}
		}
	})
}

// FuzzManifestDigest: whatever the reference, Digest answers without
// panicking, and what it returns is the body's digest.
func FuzzManifestDigest(f *testing.F) {
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"` + cfgDigest + `","size":2},"layers":[]}`
	f.Add("latest", body)
	f.Add(digest.FromString(body).String(), body)
	f.Add(digest.SHA512.FromString(body).String(), body)
	f.Add(digest.FromString("other").String(), body)
	f.Add("sha256:abc", body)
	f.Add("md5:d41d8cd98f00b204e9800998ecf8427e", body)
	f.Add("sha384:"+strings.Repeat("0", 96), "")
	f.Fuzz(func(t *testing.T, ref, body string) {
		d, err := Digest(ref, []byte(body))
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrDigest) {
				t.Fatalf("Digest(%q): error that is not an *Error of kind ErrDigest: %v", ref, err)
			}
			return
		}
		if d.Validate() != nil || d.Algorithm().FromString(body) != d {
			t.Fatalf("Digest(%q) = %s, not the body's digest", ref, d)
		}
		if IsDigest(ref) && string(d) != ref {
			t.Fatalf("Digest(%q) = %s", ref, d)
		}
	})
}
