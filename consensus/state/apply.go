package state

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// manifestMeta is what a repository knows of a manifest it holds
// (m<repo>·<digest>); the bytes are shared (b<digest>).
type manifestMeta struct {
	MediaType    string            `json:"mediaType,omitempty"`
	Subject      digest.Digest     `json:"subject,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Size         int64             `json:"size"`
}

// Apply applies the Raft log entry at index, whose bytes are data, to the
// state in db. It must be deterministic: the same entries in the same order
// leave every database with the same bytes.
//
// The entry's effect and its index are written in one transaction, and an
// entry whose index is not above the stored index is skipped (ok false),
// so replaying a log (or applying an entry twice) changes nothing. The one
// exception is a manifest delete, whose tags go in bounded transactions
// first (see dropTags): replayed, it removes whatever tags are left, then
// the manifest, with the same end state.
//
// resp is the command's error or nil: ErrNotFound, or ErrInvalidCommand for
// an entry outside the bounds of limits.go (whoever proposed it). A failing
// command leaves no trace but the applied index. err is a storage error:
// the entry is then not applied, and the caller must not apply any later
// one before it. beforeCommit, if not nil, runs just before the commit; its
// error is taken as a storage error (tests play a broken disk with it).
//
// Apply does not run concurrently with itself on one database; readers
// may run at any time (badger transactions give them consistent views).
func Apply(db *badger.DB, index uint64, data []byte, beforeCommit func(index uint64) error) (a Applied, ok bool, resp, err error) {
	txn := db.NewTransaction(true)
	defer func() { txn.Discard() }()
	v, _, err := tx{txn}.get([]byte(KeyApplied))
	if err != nil {
		return a, false, nil, err
	}
	if index <= DecodeUint64(v) {
		return a, false, nil, nil // already applied: a replay
	}
	c, resp := DecodeCommand(data)
	if resp == nil {
		resp = c.Validate()
	}
	if resp == nil && c.Op == OpDeleteManifest {
		txn.Discard()
		if err := dropTags(db, c.Repo, c.Digest); err != nil {
			return a, false, nil, err
		}
		txn = db.NewTransaction(true)
	}
	if resp == nil {
		resp, err = tx{txn}.execute(c, index)
		if err == nil {
			err = txn.Set([]byte(KeyApplied), EncodeUint64(index))
		}
		// A safety net: the bounds keep every command far inside one
		// transaction, but should one not fit, that is decided by the
		// same bytes on every node, so it is the command's error too.
		if errors.Is(err, badger.ErrTxnTooBig) {
			resp, err = fmt.Errorf("consensus: entry %d: %w: its writes do not fit in one transaction (%w)", index, ErrInvalidCommand, err), nil
		}
		if err != nil {
			return a, false, nil, err
		}
	}
	if resp != nil {
		txn.Discard()
		txn = db.NewTransaction(true)
		if err := txn.Set([]byte(KeyApplied), EncodeUint64(index)); err != nil {
			return a, false, nil, err
		}
	}
	if beforeCommit != nil {
		if err := beforeCommit(index); err != nil {
			return a, false, nil, err
		}
	}
	if err := txn.Commit(); err != nil {
		return a, false, nil, err
	}
	a = Applied{Index: index, Kind: c.Op.Kind(), Repo: c.Repo, Digest: c.Digest, Tag: c.Tag, Setting: c.Name, Failed: resp != nil}
	return a, true, resp, nil
}

// dropTags removes the repository's tags that point at d, deleteTagBatch
// of them per transaction, so that deleting a manifest with any number of
// tags stays within badger's transaction limits. These transactions leave
// the applied index alone: after a crash, the delete is applied again and
// removes what is left. Readers may meanwhile see the manifest with some of
// its tags gone, never a tag without its manifest.
func dropTags(db *badger.DB, repo string, d digest.Digest) error {
	prefix := keyPrefix(prefixTagByDig, repo, string(d))
	for {
		n, err := dropTagBatch(db, repo, d, prefix)
		if err != nil || n < deleteTagBatch {
			return err
		}
	}
}

func dropTagBatch(db *badger.DB, repo string, d digest.Digest, prefix []byte) (int, error) {
	txn := db.NewTransaction(true)
	defer txn.Discard()
	t := tx{txn}
	tags := t.keysAfter(prefix, "", deleteTagBatch)
	if len(tags) == 0 {
		return 0, nil
	}
	for _, tag := range tags {
		if err := t.Delete(TagKey(repo, tag)); err != nil {
			return 0, err
		}
		if err := t.Delete(tagByDigestKey(repo, d, tag)); err != nil {
			return 0, err
		}
	}
	return len(tags), txn.Commit()
}

// tx adds the state's reads and writes to a badger transaction.
type tx struct{ *badger.Txn }

// get returns the value at k; ok is false when there is none.
func (t tx) get(k []byte) (v []byte, ok bool, err error) {
	item, err := t.Get(k)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	v, err = item.ValueCopy(nil)
	return v, err == nil, err
}

// hasPrefix reports whether any key starts with prefix.
func (t tx) hasPrefix(prefix []byte) bool {
	it := t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	return it.Valid()
}

// keysAfter returns the keys starting with prefix, in byte order, without the
// prefix: those strictly after `after` when it is not empty, at most n of
// them (all when n < 0). The result is never nil.
func (t tx) keysAfter(prefix []byte, after string, n int) []string {
	out := []string{}
	if n == 0 {
		return out
	}
	it := t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Seek(append(append([]byte{}, prefix...), after...)); it.Valid(); it.Next() {
		name := string(it.Item().Key()[len(prefix):])
		if after != "" && name <= after {
			continue
		}
		out = append(out, name)
		if len(out) == n {
			break
		}
	}
	return out
}

func (t tx) setJSON(k []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return t.Set(k, b)
}

// execute runs one validated command in the transaction. A command that
// cannot apply to the state (ErrNotFound) is a command error (resp).
func (t tx) execute(c Command, index uint64) (resp, err error) {
	switch c.Op {
	case OpPutManifest:
		if c.CheckIndex >= index {
			return fmt.Errorf("consensus: %w: manifest put checked at index %d, not before its own index %d", ErrInvalidCommand, c.CheckIndex, index), nil
		}
		if resp, err := t.checkCollected(c); resp != nil || err != nil {
			return resp, err
		}
		if err := t.putManifest(c); err != nil {
			return nil, err
		}
		return nil, t.touchManifest(c, index)
	case OpDeleteManifest:
		return t.deleteManifest(c.Repo, c.Digest)
	case OpDeleteTag:
		return t.deleteTag(c.Repo, c.Tag)
	case OpLinkBlob:
		if err := t.linkBlob(c.Repo, c.Digest, c.Size); err != nil {
			return nil, err
		}
		return nil, t.touch(c.Digest, index, c.Time)
	case OpUnlinkBlob:
		return t.unlinkBlob(c.Repo, c.Digest)
	case OpPutSetting:
		return nil, t.Set(settingKey(c.Name), c.Body)
	case OpGCSweep:
		return t.gcSweep(c, index)
	case OpPutMirrorTag:
		return t.putMirrorTag(c)
	}
	return fmt.Errorf("consensus: unknown command %d", c.Op), nil
}

// putManifest adds the manifest to the repository unless it is there
// already, then points each tag at it.
func (t tx) putManifest(c Command) error {
	mk := ManifestKey(c.Repo, c.Digest)
	_, present, err := t.get(mk)
	if err != nil {
		return err
	}
	if !present {
		annotations := BoundedAnnotations(c.Annotations)
		meta := manifestMeta{MediaType: c.MediaType, Subject: c.Subject, ArtifactType: c.ArtifactType,
			Annotations: annotations, Size: int64(len(c.Body))}
		if err := t.setJSON(mk, meta); err != nil {
			return err
		}
		if err := t.addRef(c.Digest, c.Body); err != nil {
			return err
		}
		if c.Subject != "" {
			desc := ocispec.Descriptor{MediaType: c.MediaType, Digest: c.Digest, Size: meta.Size,
				ArtifactType: c.ArtifactType, Annotations: annotations}
			if err := t.setJSON(ReferrerKey(c.Repo, c.Subject, c.Digest), desc); err != nil {
				return err
			}
		}
		if err := t.Set(repoKey(c.Repo), nil); err != nil {
			return err
		}
	}
	for _, tag := range c.Tags {
		if err := t.setTag(c.Repo, tag, c.Digest); err != nil {
			return err
		}
	}
	return nil
}

// addRef counts one more repository holding the manifest, storing its bytes
// with the first.
func (t tx) addRef(d digest.Digest, body []byte) error {
	v, _, err := t.get(refCountKey(d))
	if err != nil {
		return err
	}
	n := DecodeUint64(v)
	if n == 0 {
		if err := t.Set(BodyKey(d), body); err != nil {
			return err
		}
	}
	return t.Set(refCountKey(d), EncodeUint64(n+1))
}

// dropRef counts one repository fewer, dropping the bytes with the last.
func (t tx) dropRef(d digest.Digest) error {
	v, _, err := t.get(refCountKey(d))
	if err != nil {
		return err
	}
	if n := DecodeUint64(v); n > 1 {
		return t.Set(refCountKey(d), EncodeUint64(n-1))
	}
	if err := t.Delete(BodyKey(d)); err != nil {
		return err
	}
	return t.Delete(refCountKey(d))
}

func (t tx) setTag(repo, tag string, d digest.Digest) error {
	old, ok, err := t.get(TagKey(repo, tag))
	if err != nil {
		return err
	}
	if ok && digest.Digest(old) == d {
		return nil
	}
	if ok {
		if err := t.Delete(tagByDigestKey(repo, digest.Digest(old), tag)); err != nil {
			return err
		}
	}
	if err := t.Set(TagKey(repo, tag), []byte(d)); err != nil {
		return err
	}
	return t.Set(tagByDigestKey(repo, d, tag), nil)
}

// deleteManifest removes the manifest from the repository with the tags
// pointing at it and its referrer entry.
func (t tx) deleteManifest(repo string, d digest.Digest) (resp, err error) {
	mk := ManifestKey(repo, d)
	v, ok, err := t.get(mk)
	if err != nil {
		return nil, err
	}
	if !ok {
		return fmt.Errorf("consensus: manifest %s is not in repository %s: %w", d, repo, ErrNotFound), nil
	}
	var meta manifestMeta
	if err := json.Unmarshal(v, &meta); err != nil {
		return nil, fmt.Errorf("decoding %q: %w", mk, err)
	}
	for _, tag := range t.keysAfter(keyPrefix(prefixTagByDig, repo, string(d)), "", -1) {
		if err := t.Delete(TagKey(repo, tag)); err != nil {
			return nil, err
		}
		if err := t.Delete(tagByDigestKey(repo, d, tag)); err != nil {
			return nil, err
		}
	}
	if meta.Subject != "" {
		if err := t.Delete(ReferrerKey(repo, meta.Subject, d)); err != nil {
			return nil, err
		}
	}
	if err := t.Delete(mk); err != nil {
		return nil, err
	}
	if err := t.dropRef(d); err != nil {
		return nil, err
	}
	return nil, t.forgetRepoIfEmpty(repo)
}

func (t tx) deleteTag(repo, tag string) (resp, err error) {
	v, ok, err := t.get(TagKey(repo, tag))
	if err != nil {
		return nil, err
	}
	if !ok {
		return fmt.Errorf("consensus: tag %s is not in repository %s: %w", tag, repo, ErrNotFound), nil
	}
	if err := t.Delete(TagKey(repo, tag)); err != nil {
		return nil, err
	}
	return nil, t.Delete(tagByDigestKey(repo, digest.Digest(v), tag))
}

func (t tx) linkBlob(repo string, d digest.Digest, size int64) error {
	if err := t.Set(blobLinkKey(repo, d), EncodeUint64(uint64(size))); err != nil {
		return err
	}
	return t.Set(repoKey(repo), nil)
}

func (t tx) unlinkBlob(repo string, d digest.Digest) (resp, err error) {
	_, ok, err := t.get(blobLinkKey(repo, d))
	if err != nil {
		return nil, err
	}
	if !ok {
		return fmt.Errorf("consensus: blob %s is not linked to repository %s: %w", d, repo, ErrNotFound), nil
	}
	if err := t.Delete(blobLinkKey(repo, d)); err != nil {
		return nil, err
	}
	return nil, t.forgetRepoIfEmpty(repo)
}

// forgetRepoIfEmpty drops the repository from the list once it holds no
// manifest, tag or blob link.
func (t tx) forgetRepoIfEmpty(repo string) error {
	for _, p := range []byte{prefixManifest, prefixTag, prefixBlobLink, prefixMirror} {
		if t.hasPrefix(keyPrefix(p, repo)) {
			return nil
		}
	}
	return t.Delete(repoKey(repo))
}
