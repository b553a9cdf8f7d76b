// Package state is the registry's metadata (manifests, tags, blob links,
// referrers, the repository list) as a deterministic function of the Raft
// log over a badger database: Apply applies one entry, Reader reads the
// state, View reads all of it at one applied index (for GC).
//
// It knows nothing of Raft: the consensus package's FSM feeds it the
// committed entries, and metadata followers are to feed it the same entries
// from the applied stream. keys.go draws the storage layout.
package state

import (
	"errors"

	"github.com/opencontainers/go-digest"
)

var (
	// ErrNotFound: the manifest, tag, blob link or repository does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalidCommand: a write is outside the bounds of limits.go, or
	// bytes given as an entry are not a valid write. Apply refuses such an
	// entry the same way on every node.
	ErrInvalidCommand = errors.New("invalid command")
	// ErrBlobCollected: a manifest put references a blob that garbage
	// collection removed after the put checked it; the client pushes the
	// blob again.
	ErrBlobCollected = errors.New("blob garbage-collected while the push was in flight")
)

// ManifestRecord is a manifest as a repository holds it.
type ManifestRecord struct {
	Repo      string
	Digest    digest.Digest
	MediaType string
	Body      []byte
	// Subject is the digest of the manifest this one refers to, "" if none.
	Subject digest.Digest
	// ArtifactType is resolved: the manifest's artifactType, else its
	// config's media type.
	ArtifactType string
	Annotations  map[string]string
	// CheckIndex is for writes only (Command.CheckIndex): the applied index
	// at or before which the writer checked the referenced blobs.
	CheckIndex uint64
}
