package api

import (
	"regexp"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
)

// The grammar of the OCI Distribution Specification v1.1.
var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxNameLength bounds a repository name; with a registry host it must fit
// in the 255 characters that clients accept for a reference.
const maxNameLength = 255

// validateName checks a repository name against the spec's grammar. The
// grammar admits no "." or ".." path element, so a valid name is also safe
// to use as a key.
func validateName(name string) error {
	if len(name) == 0 || len(name) > maxNameLength || !nameRE.MatchString(name) {
		return oci.Errorf(oci.NameInvalid, "invalid repository name %q: it must match %s and be at most %d characters", truncate(name), nameRE, maxNameLength)
	}
	return nil
}

// ValidName reports whether name is a valid repository name.
func ValidName(name string) bool { return validateName(name) == nil }

// ValidTag reports whether tag is a valid tag.
func ValidTag(tag string) bool { return !isDigestReference(tag) && tagRE.MatchString(tag) }

// parseDigest parses a digest from a URL or query; only algorithms the
// registry can verify (sha256, sha512) are accepted.
func parseDigest(s string) (digest.Digest, error) {
	d, err := digest.Parse(s)
	if err != nil {
		return "", oci.Wrap(oci.DigestInvalid, err, "invalid digest "+truncate(s)+": use <algorithm>:<hex> with sha256 or sha512")
	}
	if a := d.Algorithm(); a != digest.SHA256 && a != digest.SHA512 {
		return "", oci.Errorf(oci.DigestInvalid, "unsupported digest algorithm %q: use sha256 or sha512", truncate(string(a)))
	}
	return d, nil
}

// isDigestReference tells a digest reference ("sha256:…") from a tag: a tag
// cannot contain ':'.
func isDigestReference(ref string) bool {
	for i := 0; i < len(ref); i++ {
		if ref[i] == ':' {
			return true
		}
	}
	return false
}

// validateReference checks a manifest reference: a tag or a digest.
func validateReference(ref string) error {
	if isDigestReference(ref) {
		_, err := parseDigest(ref)
		return err
	}
	if !tagRE.MatchString(ref) {
		return oci.Errorf(oci.ManifestInvalid, "invalid tag %q: it must match %s", truncate(ref), tagRE)
	}
	return nil
}

// truncate keeps error messages bounded when the input is hostile.
func truncate(s string) string {
	const limit = 300
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}
