package node

import (
	"errors"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
)

// blobError turns a blob store error into the OCI error a client sees.
func blobError(err error, d digest.Digest) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, blobstore.ErrNotFound):
		return oci.Wrap(oci.BlobUnknown, err, "blob "+d.String()+" is not in this registry")
	case errors.Is(err, blobstore.ErrDigestMismatch):
		return oci.Wrap(oci.DigestInvalid, err, "uploaded content does not match digest "+d.String()+": push it again")
	case errors.Is(err, blobstore.ErrUnsupportedAlgorithm):
		return oci.Wrap(oci.DigestInvalid, err, "unsupported digest "+d.String()+": use sha256 or sha512")
	case errors.Is(err, blobstore.ErrUploadNotFound):
		return oci.Wrap(oci.BlobUploadUnknown, err, "upload session not found: it may have expired or been cancelled; start a new upload")
	}
	return err
}

// metaError turns a metadata store error into the OCI error a client sees;
// notFound is the code for a missing entry.
func metaError(err error, notFound oci.Code, msg string) error {
	var oe *oci.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &oe): // a client's answer already (catchUp)
		return err
	case errors.Is(err, consensus.ErrNotFound):
		return oci.Wrap(notFound, err, msg)
	case errors.Is(err, consensus.ErrBlobCollected):
		// A garbage collection freed a blob this push had checked: the
		// message names it; pushing again uploads it again.
		return oci.Wrap(oci.ManifestBlobUnknown, err, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "leader: "), "consensus: "))
	case errors.Is(err, consensus.ErrPolicyDenied):
		// An immutable tag or a quota: the message names the rule and
		// what to do (consensus/state/policy.go).
		return oci.Wrap(oci.Denied, err, strings.TrimPrefix(strings.TrimPrefix(err.Error(), "leader: "), "consensus: "))
	case errors.Is(err, consensus.ErrInvalidCommand):
		// A bound of the metadata store (too many tags, a media type it
		// does not store, ...): the message names it.
		return oci.Wrap(oci.ManifestInvalid, err, "the registry refuses this write: "+err.Error())
	case errors.Is(err, consensus.ErrStorageFailed):
		return oci.Wrap(oci.Unavailable, err, "this node's metadata database failed and the node is stopping: retry on another node ("+err.Error()+")")
	case errors.Is(err, consensus.ErrNotLeader), errors.Is(err, consensus.ErrClosed):
		return oci.Wrap(oci.Unavailable, err, "the registry cannot commit writes right now (no Raft leader): retry shortly")
	}
	return err
}
