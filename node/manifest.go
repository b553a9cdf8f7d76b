package node

import (
	"errors"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/node/manifest"
)

// manifestError maps a refusal of package manifest to the OCI error the
// client gets: MANIFEST_INVALID or DIGEST_INVALID, with the refusal's
// message as the body's message and its cause (a JSON or digest syntax
// error) kept for the log. Other errors pass through.
func manifestError(err error) error {
	var e *manifest.Error
	if !errors.As(err, &e) {
		return err
	}
	code := oci.ManifestInvalid
	if errors.Is(e.Kind, manifest.ErrDigest) {
		code = oci.DigestInvalid
	}
	if e.Err == nil {
		return oci.Errorf(code, "%s", e.Msg)
	}
	return oci.Wrap(code, e.Err, e.Msg)
}
