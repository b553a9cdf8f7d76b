package node

import (
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/node/fetch"
)

// diskBlobs is the blob store on disk as the BlobStore seam. It exists
// only because Go has no covariant results: *blobstore.Store returns its
// concrete *Partial and *Upload, which satisfy fetch.Partial and Upload
// but do not make the methods match the interface's. Each method converts;
// a nil pointer with an error becomes a nil interface, so callers can
// compare with nil.
type diskBlobs struct{ *blobstore.Store }

func (s diskBlobs) NewPartial(d digest.Digest, size int64) (fetch.Partial, error) {
	p, err := s.Store.NewPartial(d, size)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (s diskBlobs) NewUploadFor(owner string) (Upload, error) {
	u, err := s.Store.NewUploadFor(owner)
	if err != nil {
		return nil, err
	}
	return u, nil
}

func (s diskBlobs) Upload(id string) (Upload, error) {
	u, err := s.Store.Upload(id)
	if err != nil {
		return nil, err
	}
	return u, nil
}
