package state

import (
	"fmt"
	"regexp"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Bounds of a replicated write. Command.Validate enforces them twice: on the
// node a write is made on (and on the leader it is forwarded to) before it
// is proposed, and again in the FSM when the entry is applied, whoever
// proposed it. An entry outside them is an error result on every node, never
// a panic or a partial write.
//
// Together they keep every write inside one badger transaction: a put touches
// at most 4 keys per tag plus 6 (a few KiB of keys, far below the ~2.4 MiB a
// transaction takes with 16 MiB memtables); the one command whose work grows
// with the state, a manifest delete, removes the tags in batches
// (deleteTagBatch per transaction, see Apply).
const (
	// MaxTagsPerWrite bounds the tags one manifest put may set (the
	// reference plus the ?tag= parameters). Push more tags in more requests.
	MaxTagsPerWrite = 100
	// MaxManifestBytes is the largest manifest body a write may carry: the
	// API's default manifest limit (4 MiB).
	MaxManifestBytes = 4 << 20
	// MaxRepoNameLength and MaxTagLength are the distribution-spec's bounds.
	MaxRepoNameLength = 255
	MaxTagLength      = 128
	// MaxAnnotations and MaxAnnotationBytes (keys plus values) bound the
	// annotations a manifest's record and its referrer descriptor keep:
	// the FSM keeps none when a manifest has more (they stay in the
	// manifest's body), so that a referrers listing is a bounded multiple
	// of the number of referrers. Dropping rather than refusing keeps
	// entries that older versions committed with larger annotations
	// applicable. A command whose annotations are larger than a whole
	// manifest may be is refused.
	MaxAnnotations     = 64
	MaxAnnotationBytes = 4 << 10
	// MaxBlobSize bounds the size a blob link may claim: far above any real
	// layer (the largest model layers are tens of GiB), it keeps a forged
	// link from claiming terabytes.
	MaxBlobSize = 512 << 30
	// maxMediaTypeLength bounds an artifact type (RFC 6838: 127 + 1 + 127).
	maxMediaTypeLength = 255
	// deleteTagBatch is how many tags one transaction of a manifest delete
	// removes (two keys each).
	deleteTagBatch = 1000
)

var (
	// The grammar of the OCI Distribution Specification v1.1. No path
	// component may be "." or "..", and neither contains the key separator.
	repoNameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE      = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	// mediaTypeRE is an RFC 6838 type/subtype, with printable parameters.
	mediaTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}( *;[\x20-\x7e]*)?$`)
)

// ManifestMediaTypes are the manifest media types a manifest write may
// carry: OCI image manifest and index, Docker schema 2 manifest and list.
var manifestMediaTypes = map[string]bool{
	ocispec.MediaTypeImageManifest:                              true,
	ocispec.MediaTypeImageIndex:                                 true,
	"application/vnd.docker.distribution.manifest.v2+json":      true,
	"application/vnd.docker.distribution.manifest.list.v2+json": true,
}

// Validate checks a write against the bounds above: before it is proposed,
// and again when the FSM applies it. It must be deterministic (it decides
// the same on every node). The error wraps ErrInvalidCommand and names the
// limit.
func (c Command) Validate() error {
	if err := c.check(); err != nil {
		return fmt.Errorf("consensus: %w: %w", ErrInvalidCommand, err)
	}
	return nil
}

func (c Command) check() error {
	if c.Op != OpPutMirrorTag && (c.Upstream != "" || c.CheckedAt != 0) {
		return fmt.Errorf("only a mirrored tag carries an upstream or a check time")
	}
	switch c.Op {
	case OpPutManifest:
		if err := checkRepoDigest(c.Repo, c.Digest); err != nil {
			return err
		}
		switch {
		case c.Tag != "" || c.Size != 0 || c.Name != "" || c.carriesSweep():
			return fmt.Errorf("a manifest put carries no tag, size, setting name or GC field")
		case len(c.Tags) > MaxTagsPerWrite:
			return fmt.Errorf("%d tags in one write: at most %d; push the manifest once, then tag it in several requests", len(c.Tags), MaxTagsPerWrite)
		case len(c.Body) == 0:
			return fmt.Errorf("manifest %s has no body", c.Digest)
		case len(c.Body) > MaxManifestBytes:
			return fmt.Errorf("manifest is %d bytes: at most %d", len(c.Body), MaxManifestBytes)
		case !manifestMediaTypes[c.MediaType]:
			return fmt.Errorf("manifest media type %q is not a manifest type this registry stores (OCI image manifest or index, Docker schema 2 manifest or list)", truncate(c.MediaType))
		case c.ArtifactType != "" && (len(c.ArtifactType) > maxMediaTypeLength || !mediaTypeRE.MatchString(c.ArtifactType)):
			return fmt.Errorf("artifact type %q is not a media type (type/subtype, at most %d characters)", truncate(c.ArtifactType), maxMediaTypeLength)
		}
		if c.Subject != "" {
			if err := checkDigest(c.Subject); err != nil {
				return fmt.Errorf("subject: %w", err)
			}
		}
		if n := annotationBytes(c.Annotations); n > MaxManifestBytes {
			return fmt.Errorf("annotations are %d bytes, more than a manifest may hold (%d)", n, MaxManifestBytes)
		}
		for _, tag := range c.Tags {
			if err := checkTag(tag); err != nil {
				return err
			}
		}
		if c.Digest.Algorithm().FromBytes(c.Body) != c.Digest {
			return fmt.Errorf("manifest body does not match digest %s", c.Digest)
		}
	case OpDeleteTag:
		if err := checkRepo(c.Repo); err != nil {
			return err
		}
		if err := checkTag(c.Tag); err != nil {
			return err
		}
		if c.Digest != "" || c.carriesManifest() || c.Size != 0 {
			return fmt.Errorf("a tag delete carries only a repository and a tag")
		}
	case OpGCSweep:
		return c.checkSweep()
	case OpLinkBlob:
		if c.Time < 0 {
			return fmt.Errorf("blob link time %d is negative", c.Time)
		}
		if c.Size < 0 || c.Size > MaxBlobSize {
			return fmt.Errorf("blob size %d is outside 0..%d bytes", c.Size, int64(MaxBlobSize))
		}
		if c.Tag != "" || c.carriesManifest() {
			return fmt.Errorf("a blob link carries only a repository, a digest and a size")
		}
		return checkRepoDigest(c.Repo, c.Digest)
	case OpPutSetting:
		if c.Repo != "" || c.Digest != "" || c.Tag != "" || c.Size != 0 || len(c.Tags) > 0 || c.MediaType != "" ||
			c.ArtifactType != "" || c.Subject != "" || len(c.Annotations) > 0 || c.carriesSweep() || c.CheckIndex != 0 || c.Time != 0 {
			return fmt.Errorf("a setting write carries only a name and a body")
		}
		return checkSetting(c.Name, c.Body)
	case OpDeleteManifest, OpUnlinkBlob:
		if c.Tag != "" || c.carriesManifest() || c.Size != 0 {
			return fmt.Errorf("a delete carries only a repository and a digest")
		}
		return checkRepoDigest(c.Repo, c.Digest)
	case OpPutMirrorTag:
		return c.checkMirrorTag()
	default:
		return fmt.Errorf("unknown command %d", c.Op)
	}
	return nil
}

// carriesManifest reports whether any field of a manifest put (or a
// setting's name) is set.
func (c Command) carriesManifest() bool {
	return c.Name != "" || c.carriesSweep() || len(c.Tags) > 0 || c.MediaType != "" || c.ArtifactType != "" || c.Subject != "" ||
		len(c.Annotations) > 0 || len(c.Body) > 0
}

func checkRepo(repo string) error {
	if len(repo) == 0 || len(repo) > MaxRepoNameLength || !repoNameRE.MatchString(repo) {
		return fmt.Errorf("invalid repository name %q: it must match %s and be at most %d characters", truncate(repo), repoNameRE, MaxRepoNameLength)
	}
	return nil
}

func checkTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return fmt.Errorf("invalid tag %q: it must match %s", truncate(tag), tagRE)
	}
	return nil
}

// checkDigest accepts the digests the registry can verify: sha256, sha512.
func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("invalid digest %q: %w", truncate(string(d)), err)
	}
	if a := d.Algorithm(); a != digest.SHA256 && a != digest.SHA512 {
		return fmt.Errorf("digest %q: algorithm %s is not sha256 or sha512", truncate(string(d)), a)
	}
	return nil
}

func checkRepoDigest(repo string, d digest.Digest) error {
	if err := checkRepo(repo); err != nil {
		return err
	}
	return checkDigest(d)
}

func annotationBytes(a map[string]string) int {
	n := 0
	for k, v := range a {
		n += len(k) + len(v)
	}
	return n
}

// BoundedAnnotations returns a, or nil when a is beyond the bounds that a
// manifest's record and referrer descriptor keep.
func BoundedAnnotations(a map[string]string) map[string]string {
	if len(a) > MaxAnnotations || annotationBytes(a) > MaxAnnotationBytes {
		return nil
	}
	return a
}

// truncate keeps error messages bounded when the input is hostile.
func truncate(s string) string {
	const limit = 200
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
