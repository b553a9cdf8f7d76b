package state

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Reader reads the state through one badger transaction: every read
// through it sees the state at one applied index. It is valid while the
// transaction is.
type Reader struct{ t tx }

// NewReader reads through txn (read-only or not).
func NewReader(txn *badger.Txn) Reader { return Reader{tx{txn}} }

// AppliedIndex is the index of the last entry applied (0 if none).
func (r Reader) AppliedIndex() (uint64, error) {
	v, _, err := r.t.get([]byte(KeyApplied))
	return DecodeUint64(v), err
}

// Manifest returns the manifest as the repository holds it.
func (r Reader) Manifest(repo string, d digest.Digest) (ManifestRecord, error) {
	notFound := fmt.Errorf("consensus: manifest %s is not in repository %s: %w", d, repo, ErrNotFound)
	if !validName(repo) || !validName(string(d)) {
		return ManifestRecord{}, notFound
	}
	v, ok, err := r.t.get(ManifestKey(repo, d))
	if err != nil || !ok {
		return ManifestRecord{}, errors.Join(err, notFound)
	}
	var meta manifestMeta
	if err := json.Unmarshal(v, &meta); err != nil {
		return ManifestRecord{}, fmt.Errorf("consensus: decoding manifest %s in %s: %w", d, repo, err)
	}
	body, ok, err := r.t.get(BodyKey(d))
	if err != nil || !ok {
		return ManifestRecord{}, errors.Join(err, fmt.Errorf("consensus: bytes of manifest %s are missing", d))
	}
	return ManifestRecord{Repo: repo, Digest: d, MediaType: meta.MediaType, Body: body,
		Subject: meta.Subject, ArtifactType: meta.ArtifactType, Annotations: meta.Annotations}, nil
}

// ResolveTag returns the digest the tag points at.
func (r Reader) ResolveTag(repo, tag string) (digest.Digest, error) {
	notFound := fmt.Errorf("consensus: tag %s is not in repository %s: %w", tag, repo, ErrNotFound)
	if !validName(repo) || !validName(tag) {
		return "", notFound
	}
	v, ok, err := r.t.get(TagKey(repo, tag))
	if err != nil || !ok {
		return "", errors.Join(err, notFound)
	}
	return digest.Digest(v), nil
}

// Tags lists the repository's tags in byte order: those strictly after last
// (all if last is ""), at most n (all if n < 0). ErrNotFound if the
// repository does not exist; a repository without tags gives an empty slice.
func (r Reader) Tags(repo, last string, n int) ([]string, error) {
	notFound := fmt.Errorf("consensus: repository %s: %w", repo, ErrNotFound)
	if !validName(repo) {
		return nil, notFound
	}
	_, ok, err := r.t.get(repoKey(repo))
	if err != nil || !ok {
		return nil, errors.Join(err, notFound)
	}
	return r.t.keysAfter(keyPrefix(prefixTag, repo), last, n), nil
}

// Repositories lists repository names like Tags lists tags.
func (r Reader) Repositories(last string, n int) ([]string, error) {
	return r.t.keysAfter([]byte{prefixRepo}, last, n), nil
}

// RepositoryExists reports whether the repository holds any manifest, tag
// or blob link.
func (r Reader) RepositoryExists(repo string) (bool, error) {
	if !validName(repo) {
		return false, nil
	}
	_, ok, err := r.t.get(repoKey(repo))
	return ok, err
}

// BlobLink returns the size of a blob linked to the repository.
func (r Reader) BlobLink(repo string, d digest.Digest) (int64, error) {
	notFound := fmt.Errorf("consensus: blob %s is not linked to repository %s: %w", d, repo, ErrNotFound)
	if !validName(repo) || !validName(string(d)) {
		return 0, notFound
	}
	v, ok, err := r.t.get(blobLinkKey(repo, d))
	if err != nil || !ok {
		return 0, errors.Join(err, notFound)
	}
	return int64(DecodeUint64(v)), nil
}

// Referrers returns the descriptors of the repository's manifests whose
// subject is subject, sorted by digest: only those of artifactType when it
// is not "", strictly after the digest last when it is not "", at most n of
// them (all when n < 0). The result is never nil. Each descriptor is
// bounded (annotations: MaxAnnotationBytes), so a page of n is too.
func (r Reader) Referrers(repo string, subject digest.Digest, artifactType, last string, n int) ([]ocispec.Descriptor, error) {
	descs := []ocispec.Descriptor{}
	if !validName(repo) || !validName(string(subject)) || n == 0 {
		return descs, nil
	}
	prefix := keyPrefix(prefixReferrer, repo, string(subject))
	it := r.t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(append(append([]byte{}, prefix...), last...)); it.Valid(); it.Next() {
		if last != "" && string(it.Item().Key()[len(prefix):]) <= last {
			continue
		}
		var d ocispec.Descriptor
		if err := it.Item().Value(func(v []byte) error { return json.Unmarshal(v, &d) }); err != nil {
			return descs, fmt.Errorf("consensus: decoding referrer %q: %w", it.Item().Key(), err)
		}
		if artifactType != "" && d.ArtifactType != artifactType {
			continue
		}
		descs = append(descs, d)
		if len(descs) == n {
			break
		}
	}
	return descs, nil
}
