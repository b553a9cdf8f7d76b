package api

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest is a stored manifest as served: the exact bytes that were pushed,
// their media type and their digest.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Body      []byte
	// Warning, when set, is sent as a Warning header: a mirrored tag served
	// from what the cluster knew because its upstream could not be asked.
	Warning string
}

// Registry is everything the HTTP layer needs from a registry node. Names,
// tags and digests reach it already validated against the spec's grammar.
// Errors should carry an oci.Code (see package oci); any other error is
// served as 500 UNKNOWN.
type Registry interface {
	Manifests
	Blobs
	Uploads
}

// Manifests reads and writes manifests, tags and the referrers index.
type Manifests interface {
	// GetManifest resolves reference (a tag or a digest) in repo.
	GetManifest(ctx context.Context, repo, reference string) (Manifest, error)
	// PutManifest validates and stores body under reference (a tag or a
	// digest), points each of tags at it too, and returns the manifest's
	// digest and its subject ("" if none).
	PutManifest(ctx context.Context, repo, reference, contentType string, body []byte, tags []string) (digest.Digest, digest.Digest, error)
	// DeleteManifest deletes a manifest when reference is a digest, or only
	// the tag when it is a tag.
	DeleteManifest(ctx context.Context, repo, reference string) error
	// Tags lists repo's tags in lexical order after last, at most n (n < 0: all).
	Tags(ctx context.Context, repo, last string, n int) ([]string, error)
	// Repositories lists repositories in lexical order after last, at most n.
	Repositories(ctx context.Context, last string, n int) ([]string, error)
	// Referrers lists the manifests in repo whose subject is subject, in
	// digest order: only those of artifactType unless it is "", after the
	// digest last unless it is "", at most n (n < 0: all).
	Referrers(ctx context.Context, repo string, subject digest.Digest, artifactType, last string, n int) ([]ocispec.Descriptor, error)
}

// Blobs reads and deletes blobs linked to a repository.
type Blobs interface {
	StatBlob(ctx context.Context, repo string, d digest.Digest) (int64, error)
	// OpenBlob returns the blob's content; an *os.File (or a FileReader
	// over one) lets the server use sendfile.
	OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, int64, error)
	DeleteBlob(ctx context.Context, repo string, d digest.Digest) error
}

// Uploads writes blobs: monolithically, in resumable sessions, or by
// mounting a blob another repository already holds.
type Uploads interface {
	// PutBlob stores the whole blob read from r, verified against d.
	PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader) (int64, error)
	// MountBlob links d into repo from repository from ("" = any repository
	// of this registry). It reports false when the blob cannot be mounted.
	MountBlob(ctx context.Context, repo, from string, d digest.Digest) (bool, error)
	StartUpload(ctx context.Context, repo string) (id string, err error)
	// UploadSize is the number of bytes an upload session holds so far.
	UploadSize(ctx context.Context, repo, id string) (int64, error)
	// AppendUpload appends r to the session and returns its new size. A
	// failed append leaves the session as it was.
	AppendUpload(ctx context.Context, repo, id string, r io.Reader) (int64, error)
	// FinishUpload commits the session's content as blob d.
	FinishUpload(ctx context.Context, repo, id string, d digest.Digest) (int64, error)
	CancelUpload(ctx context.Context, repo, id string) error
}

// Node answers the operational endpoints.
type Node interface {
	// Ready returns nil when the node can take writes.
	Ready(ctx context.Context) error
	// Status is the JSON document served at /_meshreg/v1/status.
	Status(ctx context.Context) any
	// RemoveMember removes a member (by peer id) from the cluster for good;
	// when id is no member, it revokes id as a follower of the metadata
	// for good (by names who asked, for the record). It returns which it
	// did; an error wrapping ErrAlreadyRevoked if id was revoked before.
	RemoveMember(ctx context.Context, id, by string) (Removal, error)
}

// Removal is what RemoveMember did.
type Removal string

const (
	// RemovedMember: id was a member, and was removed from the Raft
	// configuration.
	RemovedMember Removal = "removed"
	// RevokedFollower: id was no member, and is revoked as a follower of
	// the metadata: no member serves it or admits it again.
	RevokedFollower Removal = "revoked"
)

// Barrier is an optional ability of a Registry whose reads are local and may
// lag: Barrier returns once the local state holds every write acknowledged
// before the call. A read with ?consistent=1 calls it first.
type Barrier interface {
	Barrier(ctx context.Context) error
}
