// Package manifest reads the OCI and Docker schema 2 manifests and indexes
// this registry stores: it checks that a body is one (the bounds below) and
// says what it references. The write path uses it to refuse a manifest
// whose blobs or children are not in the repository; garbage collection
// will use it to mark what a stored manifest keeps alive, and the upstream
// mirror to learn what to fetch next. It does no I/O and keeps no state, so
// every caller can run it on any body, including an untrusted one.
package manifest

import (
	"encoding/json"
	"fmt"
	"mime"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The Docker schema 2 media types; the OCI ones are in ocispec.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// kinds maps each accepted manifest media type to whether it is an index
// (its children are manifests) or an image manifest (its children are blobs).
var kinds = map[string]bool{
	ocispec.MediaTypeImageManifest: false,
	MediaTypeDockerManifest:        false,
	ocispec.MediaTypeImageIndex:    true,
	MediaTypeDockerManifestList:    true,
}

// MediaTypes are the manifest media types Parse accepts, images first: what
// a client of another registry puts in its Accept header.
func MediaTypes() []string {
	return []string{
		ocispec.MediaTypeImageManifest,
		MediaTypeDockerManifest,
		ocispec.MediaTypeImageIndex,
		MediaTypeDockerManifestList,
	}
}

// Manifest is what a manifest references and says about itself.
type Manifest struct {
	// MediaType is one of MediaTypes.
	MediaType string
	// Blobs are the config and the distributable layers of an image
	// manifest: the blobs that must be in the repository before the
	// manifest is accepted, and that it keeps alive. Non-distributable
	// layers (with urls) live elsewhere and are not listed.
	Blobs []ocispec.Descriptor
	// Children are the manifests an index lists.
	Children []ocispec.Descriptor
	// Subject is the manifest this one refers to (a signature's image), or
	// nil. It may be pushed after its referrer.
	Subject *ocispec.Descriptor
	// ArtifactType is what the referrers API reports: the manifest's
	// artifactType, or else its config's media type.
	ArtifactType string
	Annotations  map[string]string
}

// doc is the union of the fields of the accepted manifest kinds.
type doc struct {
	SchemaVersion *int                 `json:"schemaVersion"`
	MediaType     string               `json:"mediaType"`
	ArtifactType  string               `json:"artifactType"`
	Config        *ocispec.Descriptor  `json:"config"`
	Layers        []ocispec.Descriptor `json:"layers"`
	Manifests     []ocispec.Descriptor `json:"manifests"`
	Subject       *ocispec.Descriptor  `json:"subject"`
	Annotations   map[string]string    `json:"annotations"`
}

// Parse checks that body is a schema 2 manifest or index of one of
// MediaTypes with valid descriptors, and returns what it references.
// contentType is the media type the body is said to have (a request's
// Content-Type, a stored manifest's media type) or empty; when both it and
// the body's mediaType field are present they must agree. A refusal is an
// *Error matching ErrInvalid.
func Parse(contentType string, body []byte) (Manifest, error) {
	var d doc
	if err := json.Unmarshal(body, &d); err != nil {
		return Manifest{}, invalidWrap(err, "manifest is not valid JSON")
	}
	if d.SchemaVersion == nil || *d.SchemaVersion != 2 {
		return Manifest{}, invalidf("manifest schemaVersion must be 2 (schema 1 is not supported)")
	}
	mt, err := mediaType(contentType, d)
	if err != nil {
		return Manifest{}, err
	}
	m := Manifest{MediaType: mt, Subject: d.Subject, Annotations: d.Annotations, ArtifactType: d.ArtifactType}
	if kinds[mt] {
		if d.Config != nil || d.Layers != nil {
			return Manifest{}, invalidf("an index (%s) has manifests, not config or layers", mt)
		}
		for i, c := range d.Manifests {
			if err := checkDescriptor(c, fmt.Sprintf("manifests[%d]", i)); err != nil {
				return Manifest{}, err
			}
		}
		m.Children = d.Manifests
	} else {
		if d.Config == nil {
			return Manifest{}, invalidf("an image manifest (%s) needs a config descriptor", mt)
		}
		if d.Manifests != nil {
			return Manifest{}, invalidf("an image manifest (%s) has layers, not manifests", mt)
		}
		if err := checkDescriptor(*d.Config, "config"); err != nil {
			return Manifest{}, err
		}
		m.Blobs = append(m.Blobs, *d.Config)
		for i, l := range d.Layers {
			if err := checkDescriptor(l, fmt.Sprintf("layers[%d]", i)); err != nil {
				return Manifest{}, err
			}
			// Non-distributable layers live elsewhere (their urls); the
			// spec exempts them from the presence check.
			if len(l.URLs) == 0 {
				m.Blobs = append(m.Blobs, l)
			}
		}
		if m.ArtifactType == "" {
			m.ArtifactType = d.Config.MediaType
		}
	}
	if d.Subject != nil {
		if err := checkDescriptor(*d.Subject, "subject"); err != nil {
			return Manifest{}, err
		}
	}
	return m, nil
}

// mediaType decides the manifest's media type from the content type it is
// said to have and the body's mediaType field.
func mediaType(contentType string, d doc) (string, error) {
	ct := ""
	if contentType != "" {
		parsed, _, err := mime.ParseMediaType(contentType)
		if err != nil {
			return "", invalidWrap(err, "invalid Content-Type "+contentType)
		}
		ct = parsed
	}
	if ct == "application/json" || ct == "application/octet-stream" {
		ct = "" // generic types say nothing; use the body
	}
	mt := ct
	switch {
	case ct != "" && d.MediaType != "" && ct != d.MediaType:
		return "", invalidf("Content-Type %q does not match the manifest's mediaType %q", ct, d.MediaType)
	case mt == "" && d.MediaType != "":
		mt = d.MediaType
	case mt == "" && d.Manifests != nil:
		mt = ocispec.MediaTypeImageIndex
	case mt == "" && d.Config != nil:
		mt = ocispec.MediaTypeImageManifest
	}
	if _, ok := kinds[mt]; !ok {
		return "", invalidf("unsupported manifest media type %q: push an OCI image manifest or index, or a Docker schema 2 manifest or manifest list", mt)
	}
	return mt, nil
}

// checkDescriptor is the bound on every descriptor a manifest holds: a
// valid digest (callers look blobs up and build paths from it), a size
// that is not negative, and a media type.
func checkDescriptor(d ocispec.Descriptor, where string) error {
	if err := d.Digest.Validate(); err != nil {
		return invalidWrap(err, where+" has an invalid digest")
	}
	if d.Size < 0 {
		return invalidf("%s has a negative size", where)
	}
	if d.MediaType == "" {
		return invalidf("%s has no mediaType", where)
	}
	return nil
}
