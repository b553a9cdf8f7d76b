package manifest

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	cfgDigest   = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	layerDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

func TestParseManifest(t *testing.T) {
	t.Parallel()
	image := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
	  "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfgDigest + `","size":2},
	  "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` + layerDigest + `","size":0},
	            {"mediaType":"application/vnd.oci.image.layer.nondistributable.v1.tar","digest":"` + layerDigest + `","size":0,"urls":["https://example.com/l"]}]}`
	artifact := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig",
	  "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + cfgDigest + `","size":2},"layers":[],
	  "subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + layerDigest + `","size":7},
	  "annotations":{"a":"b"}}`
	configTyped := `{"schemaVersion":2,"config":{"mediaType":"application/vnd.example.config","digest":"` + cfgDigest + `","size":2},"layers":[]}`
	index := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + layerDigest + `","size":7}]}`
	docker := `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"` + cfgDigest + `","size":2},"layers":[]}`

	t.Run("image manifest lists config and distributable layers", func(t *testing.T) {
		p, err := Parse(ocispec.MediaTypeImageManifest, []byte(image))
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Blobs) != 2 || p.Blobs[0].Digest != cfgDigest || p.Blobs[1].Digest != layerDigest {
			t.Errorf("blobs = %v, want config and the one distributable layer", p.Blobs)
		}
		if p.ArtifactType != "application/vnd.oci.image.config.v1+json" {
			t.Errorf("artifactType = %q, want the config media type", p.ArtifactType)
		}
	})
	t.Run("artifact keeps artifactType, subject and annotations", func(t *testing.T) {
		p, err := Parse("", []byte(artifact))
		if err != nil {
			t.Fatal(err)
		}
		if p.ArtifactType != "application/vnd.example.sig" || p.Subject == nil || p.Subject.Digest != layerDigest || p.Annotations["a"] != "b" {
			t.Errorf("parsed = %+v", p)
		}
	})
	t.Run("media type inferred from fields", func(t *testing.T) {
		p, err := Parse("", []byte(configTyped))
		if err != nil {
			t.Fatal(err)
		}
		if p.MediaType != ocispec.MediaTypeImageManifest || p.ArtifactType != "application/vnd.example.config" {
			t.Errorf("parsed = %+v", p)
		}
	})
	t.Run("index lists children", func(t *testing.T) {
		p, err := Parse(ocispec.MediaTypeImageIndex+"; charset=utf-8", []byte(index))
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Children) != 1 || len(p.Blobs) != 0 {
			t.Errorf("parsed = %+v", p)
		}
	})
	t.Run("docker schema 2", func(t *testing.T) {
		if _, err := Parse(MediaTypeDockerManifest, []byte(docker)); err != nil {
			t.Fatal(err)
		}
	})

	invalid := []struct {
		name, contentType, body string
	}{
		{"not JSON", ocispec.MediaTypeImageManifest, `{"schemaVersion":2,`},
		{"schema 1", "", `{"schemaVersion":1,"name":"x"}`},
		{"no schema version", ocispec.MediaTypeImageManifest, `{"config":{}}`},
		{"content type disagrees with mediaType", ocispec.MediaTypeImageIndex, image},
		{"unknown media type", "application/vnd.example.unknown", `{"schemaVersion":2,"config":{"mediaType":"a","digest":"` + cfgDigest + `","size":2}}`},
		{"image without config", ocispec.MediaTypeImageManifest, `{"schemaVersion":2,"layers":[]}`},
		{"bad layer digest", ocispec.MediaTypeImageManifest, strings.Replace(image, layerDigest, "sha256:xyz", 1)},
		{"negative size", ocispec.MediaTypeImageManifest, strings.Replace(image, `"size":2`, `"size":-2`, 1)},
		{"index with layers", ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"manifests":[],"layers":[]}`},
		{"bad content type", "a/b; ===", image},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.contentType, []byte(tt.body))
			var e *Error
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &e) || e.Msg == "" {
				t.Errorf("err = %v, want an *Error matching ErrInvalid, with a message", err)
			}
		})
	}
}

// TestParseError: a refusal keeps its cause, and its message says what is
// wrong without the cause, so the caller can show each where it belongs.
func TestParseError(t *testing.T) {
	t.Parallel()
	_, err := Parse("", []byte(`{"schemaVersion":2,`))
	var syntax *json.SyntaxError
	if !errors.As(err, &syntax) {
		t.Errorf("err = %v, want it to wrap the JSON syntax error", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Msg != "manifest is not valid JSON" || !strings.HasPrefix(err.Error(), e.Msg+": ") {
		t.Errorf("err = %v (%+v), want message %q and then the cause", err, e, "manifest is not valid JSON")
	}
	if errors.Is(err, ErrDigest) {
		t.Errorf("a parse error matches ErrDigest: %v", err)
	}
}

func TestManifestDigest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2}`)
	if d, err := Digest("latest", body); err != nil || d != digest.FromBytes(body) {
		t.Errorf("by tag: %s, %v", d, err)
	}
	sha512 := digest.SHA512.FromBytes(body)
	if d, err := Digest(sha512.String(), body); err != nil || d != sha512 {
		t.Errorf("by sha512 digest: %s, %v", d, err)
	}
	if _, err := Digest(digest.FromString("other").String(), body); !errors.Is(err, ErrDigest) || errors.Is(err, ErrInvalid) {
		t.Errorf("mismatched digest: err = %v, want ErrDigest", err)
	}
	if _, err := Digest("md5:d41d8cd98f00b204e9800998ecf8427e", body); !errors.Is(err, ErrDigest) {
		t.Errorf("unknown algorithm: err = %v, want ErrDigest", err)
	}
}

func TestIsDigest(t *testing.T) {
	t.Parallel()
	for ref, want := range map[string]bool{
		"latest":            false,
		"v1.2.3-rc_1":       false,
		cfgDigest:           true,
		"sha256:not-hex-ok": true, // a digest reference, refused later by Digest
	} {
		if got := IsDigest(ref); got != want {
			t.Errorf("IsDigest(%q) = %v, want %v", ref, got, want)
		}
	}
}

// TestMediaTypes: the list a mirror asks for is exactly what Parse takes.
func TestMediaTypes(t *testing.T) {
	t.Parallel()
	got := MediaTypes()
	if len(got) != len(kinds) {
		t.Fatalf("MediaTypes() = %v, want the %d accepted types", got, len(kinds))
	}
	for mt := range kinds {
		if !slices.Contains(got, mt) {
			t.Errorf("MediaTypes() = %v, missing %s", got, mt)
		}
	}
}
