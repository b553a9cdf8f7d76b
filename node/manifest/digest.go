package manifest

import (
	// go-digest hashes through crypto.Hash, which knows only the
	// algorithms linked in: without these, sha256 and sha512 references
	// would be refused as unsupported.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// IsDigest reports whether a manifest reference (the <reference> of
// /v2/<name>/manifests/<reference>) names a digest rather than a tag: tags
// cannot hold a colon.
func IsDigest(reference string) bool {
	return strings.Contains(reference, ":")
}

// Digest computes the digest of body with the algorithm of reference when
// it is a digest, sha256 otherwise, and checks it against the reference. A
// refusal is an *Error matching ErrDigest.
func Digest(reference string, body []byte) (digest.Digest, error) {
	alg := digest.Canonical
	var want digest.Digest
	if IsDigest(reference) {
		// Validate first: hashing with an algorithm go-digest does not
		// know panics.
		if err := digest.Digest(reference).Validate(); err != nil {
			return "", digestWrap(err, fmt.Sprintf("invalid manifest digest %.300q: use sha256:<hex> or sha512:<hex>", reference))
		}
		want = digest.Digest(reference)
		alg = want.Algorithm()
	}
	got := alg.FromBytes(body)
	if want != "" && got != want {
		return "", digestf("manifest digest is %s, not %s as its reference says", got, want)
	}
	return got, nil
}
