package node

import (
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/node/manifest"
)

const (
	cfgDigest   = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	layerDigest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// TestManifestError: the write path answers a refused manifest with the
// OCI code the spec names (MANIFEST_INVALID, DIGEST_INVALID), the
// refusal's message for the client and its cause kept for the log.
func TestManifestError(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2}`)
	parse := func(contentType, body string) error {
		_, err := manifest.Parse(contentType, []byte(body))
		return err
	}
	digestOf := func(reference string) error {
		_, err := manifest.Digest(reference, body)
		return err
	}
	isSyntaxError := func(err error) bool {
		var s *json.SyntaxError
		return errors.As(err, &s)
	}
	isUnsupported := func(err error) bool { return errors.Is(err, digest.ErrDigestUnsupported) }
	for _, tt := range []struct {
		name    string
		err     error
		code    oci.Code
		message string
		cause   func(error) bool // recognises the cause, or nil: none
	}{
		{"not JSON", parse(ocispec.MediaTypeImageManifest, `{"schemaVersion":2,`), oci.ManifestInvalid, "manifest is not valid JSON", isSyntaxError},
		{"schema 1", parse("", `{"schemaVersion":1,"name":"x"}`), oci.ManifestInvalid, "manifest schemaVersion must be 2 (schema 1 is not supported)", nil},
		{"unknown media type", parse("application/vnd.example.unknown", `{"schemaVersion":2}`), oci.ManifestInvalid,
			`unsupported manifest media type "application/vnd.example.unknown": push an OCI image manifest or index, or a Docker schema 2 manifest or manifest list`, nil},
		{"digest mismatch", digestOf(digest.FromString("other").String()), oci.DigestInvalid,
			"manifest digest is " + digest.FromBytes(body).String() + ", not " + digest.FromString("other").String() + " as its reference says", nil},
		{"unknown digest algorithm", digestOf("md5:d41d8cd98f00b204e9800998ecf8427e"), oci.DigestInvalid,
			`invalid manifest digest "md5:d41d8cd98f00b204e9800998ecf8427e": use sha256:<hex> or sha512:<hex>`, isUnsupported},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := manifestError(tt.err)
			var e *oci.Error
			if !errors.Is(err, tt.code) || !errors.As(err, &e) {
				t.Fatalf("err = %v, want %s", err, tt.code.Name)
			}
			if e.Message != tt.message {
				t.Errorf("message = %q, want %q", e.Message, tt.message)
			}
			if tt.cause != nil && !tt.cause(e.Err) {
				t.Errorf("cause = %v, not the one expected", e.Err)
			}
			if tt.cause == nil && e.Err != nil {
				t.Errorf("cause = %v, want none", e.Err)
			}
		})
	}
	t.Run("other errors pass through", func(t *testing.T) {
		t.Parallel()
		if err := manifestError(io.ErrUnexpectedEOF); err != io.ErrUnexpectedEOF {
			t.Errorf("manifestError(io.ErrUnexpectedEOF) = %v", err)
		}
		if err := manifestError(nil); err != nil {
			t.Errorf("manifestError(nil) = %v", err)
		}
	})
}
