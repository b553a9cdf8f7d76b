package node

import (
	"encoding/json"
	"fmt"
	"mime"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api/oci"
)

// The manifest media types this registry stores.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// kinds maps each accepted manifest media type to whether it is an index
// (its children are manifests) or an image manifest (its children are blobs).
var kinds = map[string]bool{
	ocispec.MediaTypeImageManifest: false,
	mediaTypeDockerManifest:        false,
	ocispec.MediaTypeImageIndex:    true,
	mediaTypeDockerManifestList:    true,
}

// manifestDoc is the union of the fields of the accepted manifest kinds.
type manifestDoc struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

// parsedManifest is what the write path needs to know about a manifest.
type parsedManifest struct {
	mediaType string
	// blobs must be linked to the repository before the manifest is
	// accepted; children must be manifests of the repository.
	blobs    []ocispec.Descriptor
	children []ocispec.Descriptor
	subject  *ocispec.Descriptor
	// artifactType is what the referrers API reports: the manifest's
	// artifactType, or else its config's media type.
	artifactType string
	annotations  map[string]string
}

// parseManifest validates a pushed manifest and extracts its references.
// contentType is the request's Content-Type; it must agree with the body's
// mediaType when both are present.
func parseManifest(contentType string, body []byte) (parsedManifest, error) {
	var doc manifestDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return parsedManifest{}, oci.Wrap(oci.ManifestInvalid, err, "manifest is not valid JSON")
	}
	if doc.SchemaVersion == nil || *doc.SchemaVersion != 2 {
		return parsedManifest{}, oci.Errorf(oci.ManifestInvalid, "manifest schemaVersion must be 2 (schema 1 is not supported)")
	}
	mt, err := manifestMediaType(contentType, doc)
	if err != nil {
		return parsedManifest{}, err
	}
	p := parsedManifest{mediaType: mt, subject: doc.Subject, annotations: doc.Annotations, artifactType: doc.ArtifactType}
	if kinds[mt] {
		if doc.Config != nil || doc.Layers != nil {
			return parsedManifest{}, oci.Errorf(oci.ManifestInvalid, "an index (%s) has manifests, not config or layers", mt)
		}
		for i, m := range doc.Manifests {
			if err := checkDescriptor(m, fmt.Sprintf("manifests[%d]", i)); err != nil {
				return parsedManifest{}, err
			}
		}
		p.children = doc.Manifests
	} else {
		if doc.Config == nil {
			return parsedManifest{}, oci.Errorf(oci.ManifestInvalid, "an image manifest (%s) needs a config descriptor", mt)
		}
		if doc.Manifests != nil {
			return parsedManifest{}, oci.Errorf(oci.ManifestInvalid, "an image manifest (%s) has layers, not manifests", mt)
		}
		if err := checkDescriptor(*doc.Config, "config"); err != nil {
			return parsedManifest{}, err
		}
		p.blobs = append(p.blobs, *doc.Config)
		for i, l := range doc.Layers {
			if err := checkDescriptor(l, fmt.Sprintf("layers[%d]", i)); err != nil {
				return parsedManifest{}, err
			}
			// Non-distributable layers live elsewhere (their urls); the
			// spec exempts them from the presence check.
			if len(l.URLs) == 0 {
				p.blobs = append(p.blobs, l)
			}
		}
		if p.artifactType == "" {
			p.artifactType = doc.Config.MediaType
		}
	}
	if doc.Subject != nil {
		if err := checkDescriptor(*doc.Subject, "subject"); err != nil {
			return parsedManifest{}, err
		}
	}
	return p, nil
}

// manifestMediaType decides the manifest's media type from the request's
// Content-Type and the body's mediaType field.
func manifestMediaType(contentType string, doc manifestDoc) (string, error) {
	ct := ""
	if contentType != "" {
		parsed, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return "", oci.Wrap(oci.ManifestInvalid, err, "invalid Content-Type "+contentType)
		}
		ct = parsed
	}
	if ct == "application/json" || ct == "application/octet-stream" {
		ct = "" // generic types say nothing; use the body
	}
	mt := ct
	switch {
	case ct != "" && doc.MediaType != "" && ct != doc.MediaType:
		return "", oci.Errorf(oci.ManifestInvalid, "Content-Type %q does not match the manifest's mediaType %q", ct, doc.MediaType)
	case mt == "" && doc.MediaType != "":
		mt = doc.MediaType
	case mt == "" && doc.Manifests != nil:
		mt = ocispec.MediaTypeImageIndex
	case mt == "" && doc.Config != nil:
		mt = ocispec.MediaTypeImageManifest
	}
	if _, ok := kinds[mt]; !ok {
		return "", oci.Errorf(oci.ManifestInvalid, "unsupported manifest media type %q: push an OCI image manifest or index, or a Docker schema 2 manifest or manifest list", mt)
	}
	return mt, nil
}

func checkDescriptor(d ocispec.Descriptor, where string) error {
	if err := d.Digest.Validate(); err != nil {
		return oci.Wrap(oci.ManifestInvalid, err, where+" has an invalid digest")
	}
	if d.Size < 0 {
		return oci.Errorf(oci.ManifestInvalid, "%s has a negative size", where)
	}
	if d.MediaType == "" {
		return oci.Errorf(oci.ManifestInvalid, "%s has no mediaType", where)
	}
	return nil
}

// manifestDigest computes the digest of body with the algorithm of the
// reference when it is a digest, sha256 otherwise, and checks it against
// the reference.
func manifestDigest(reference string, body []byte) (digest.Digest, error) {
	alg := digest.Canonical
	var want digest.Digest
	if isDigest(reference) {
		// Validate first: hashing with an algorithm go-digest does not
		// know panics.
		if err := digest.Digest(reference).Validate(); err != nil {
			return "", oci.Wrap(oci.DigestInvalid, err, fmt.Sprintf("invalid manifest digest %.300q: use sha256:<hex> or sha512:<hex>", reference))
		}
		want = digest.Digest(reference)
		alg = want.Algorithm()
	}
	got := alg.FromBytes(body)
	if want != "" && got != want {
		return "", oci.Errorf(oci.DigestInvalid, "manifest digest is %s, not %s as its reference says", got, want)
	}
	return got, nil
}

func isDigest(reference string) bool {
	for i := 0; i < len(reference); i++ {
		if reference[i] == ':' {
			return true
		}
	}
	return false
}
