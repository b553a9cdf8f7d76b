package node

import (
	"io"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/node/fetch"
)

// concreteBlobs is a blob store whose partial copies and upload sessions
// are its own concrete types P and U, as *blobstore.Store's are (and
// nodefake.Blobs', which mirrors it).
type concreteBlobs[P fetch.Partial, U Upload] interface {
	BlobReader
	Put(d digest.Digest, r io.Reader) (int64, error)
	NewPartial(d digest.Digest, size int64) (P, error)
	NewUploadFor(owner string) (U, error)
	Upload(id string) (U, error)
	ExpireUploads(idle time.Duration) int
	OpenUploads() int
	SetUploadLimits(l blobstore.UploadLimits)
}

// adaptBlobs is such a store as the BlobStore seam. It exists only because
// Go has no covariant results: a method returning *blobstore.Partial does
// not implement one returning fetch.Partial, though the value does. Each
// of the three methods converts; a nil pointer with an error becomes a nil
// interface, so callers may compare with nil.
type adaptBlobs[P fetch.Partial, U Upload] struct{ concreteBlobs[P, U] }

// diskBlobs is the blob store on disk as the seam.
type diskBlobs = adaptBlobs[*blobstore.Partial, *blobstore.Upload]

func (s adaptBlobs[P, U]) NewPartial(d digest.Digest, size int64) (fetch.Partial, error) {
	p, err := s.concreteBlobs.NewPartial(d, size)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (s adaptBlobs[P, U]) NewUploadFor(owner string) (Upload, error) {
	u, err := s.concreteBlobs.NewUploadFor(owner)
	if err != nil {
		return nil, err
	}
	return u, nil
}

func (s adaptBlobs[P, U]) Upload(id string) (Upload, error) {
	u, err := s.concreteBlobs.Upload(id)
	if err != nil {
		return nil, err
	}
	return u, nil
}
