package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api/oci"
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
		p, err := parseManifest(ocispec.MediaTypeImageManifest, []byte(image))
		if err != nil {
			t.Fatal(err)
		}
		if len(p.blobs) != 2 || p.blobs[0].Digest != cfgDigest || p.blobs[1].Digest != layerDigest {
			t.Errorf("blobs = %v, want config and the one distributable layer", p.blobs)
		}
		if p.artifactType != "application/vnd.oci.image.config.v1+json" {
			t.Errorf("artifactType = %q, want the config media type", p.artifactType)
		}
	})
	t.Run("artifact keeps artifactType, subject and annotations", func(t *testing.T) {
		p, err := parseManifest("", []byte(artifact))
		if err != nil {
			t.Fatal(err)
		}
		if p.artifactType != "application/vnd.example.sig" || p.subject == nil || p.subject.Digest != layerDigest || p.annotations["a"] != "b" {
			t.Errorf("parsed = %+v", p)
		}
	})
	t.Run("media type inferred from fields", func(t *testing.T) {
		p, err := parseManifest("", []byte(configTyped))
		if err != nil {
			t.Fatal(err)
		}
		if p.mediaType != ocispec.MediaTypeImageManifest || p.artifactType != "application/vnd.example.config" {
			t.Errorf("parsed = %+v", p)
		}
	})
	t.Run("index lists children", func(t *testing.T) {
		p, err := parseManifest(ocispec.MediaTypeImageIndex+"; charset=utf-8", []byte(index))
		if err != nil {
			t.Fatal(err)
		}
		if len(p.children) != 1 || len(p.blobs) != 0 {
			t.Errorf("parsed = %+v", p)
		}
	})
	t.Run("docker schema 2", func(t *testing.T) {
		if _, err := parseManifest(mediaTypeDockerManifest, []byte(docker)); err != nil {
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
			if _, err := parseManifest(tt.contentType, []byte(tt.body)); !errors.Is(err, oci.ManifestInvalid) {
				t.Errorf("err = %v, want MANIFEST_INVALID", err)
			}
		})
	}
}

func TestManifestDigest(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2}`)
	if d, err := manifestDigest("latest", body); err != nil || d != digest.FromBytes(body) {
		t.Errorf("by tag: %s, %v", d, err)
	}
	sha512 := digest.SHA512.FromBytes(body)
	if d, err := manifestDigest(sha512.String(), body); err != nil || d != sha512 {
		t.Errorf("by sha512 digest: %s, %v", d, err)
	}
	if _, err := manifestDigest(digest.FromString("other").String(), body); !errors.Is(err, oci.DigestInvalid) {
		t.Errorf("mismatched digest: err = %v, want DIGEST_INVALID", err)
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add("", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"`+cfgDigest+`","size":2},"layers":[]}`)
	f.Add(ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"manifests":[{"mediaType":"a/b","digest":"`+cfgDigest+`","size":2}]}`)
	f.Add("application/json", `{"schemaVersion":2,"subject":null}`)
	f.Fuzz(func(t *testing.T, contentType, body string) {
		p, err := parseManifest(contentType, []byte(body))
		if err != nil {
			var e *oci.Error
			if !errors.As(err, &e) {
				t.Fatalf("error without an OCI code: %v", err)
			}
			return
		}
		if _, ok := kinds[p.mediaType]; !ok {
			t.Fatalf("accepted unsupported media type %q", p.mediaType)
		}
		for _, d := range append(p.blobs, p.children...) {
			if d.Digest.Validate() != nil {
				t.Fatalf("accepted invalid digest %q", d.Digest)
			}
		}
	})
}
