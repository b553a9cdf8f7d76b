package state

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// View is the whole state at one applied index, for garbage collection:
// every manifest with what it references, and every blob link. It reads
// through one transaction, so however long a mark phase takes, it sees no
// write applied after Index.
type View struct {
	t     tx
	index uint64
}

// ManifestRef is a manifest a repository holds, with what it references.
type ManifestRef struct {
	Repo      string
	Digest    digest.Digest
	MediaType string
	// Subject is the manifest this one refers to, "" if none.
	Subject digest.Digest
	// Tags point at the manifest in Repo, in byte order.
	Tags []string
	// Blobs are the config and layers (and any other blob) an image
	// manifest lists; Children the manifests an index lists.
	Blobs    []digest.Digest
	Children []digest.Digest
	// BodyErr is set when the body could not be parsed: Blobs and
	// Children are then unknown, and a collector keeps what it cannot
	// rule out.
	BodyErr error
}

// BlobLinkRef is a blob linked to a repository.
type BlobLinkRef struct {
	Repo   string
	Digest digest.Digest
	Size   int64
}

// NewView reads the state through txn, at the index applied when txn began.
func NewView(txn *badger.Txn) (*View, error) {
	v := &View{t: tx{txn}}
	idx, err := NewReader(txn).AppliedIndex()
	if err != nil {
		return nil, fmt.Errorf("consensus: reading the applied index: %w", err)
	}
	v.index = idx
	return v, nil
}

// Index is the applied Raft index the view shows the state at.
func (v *View) Index() uint64 { return v.index }

// Manifests calls fn for every manifest of every repository, by repository
// then digest, until fn returns an error (which it returns).
func (v *View) Manifests(fn func(ManifestRef) error) error {
	prefix := []byte{prefixManifest}
	it := v.t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		repo, d, ok := splitPair(k[1:])
		if !ok {
			return fmt.Errorf("consensus: malformed manifest key %q", k)
		}
		var meta manifestMeta
		if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &meta) }); err != nil {
			return fmt.Errorf("consensus: decoding manifest %s in %s: %w", d, repo, err)
		}
		ref := ManifestRef{Repo: repo, Digest: digest.Digest(d), MediaType: meta.MediaType, Subject: meta.Subject,
			Tags: v.t.keysAfter(keyPrefix(prefixTagByDig, repo, d), "", -1)}
		body, ok, err := v.t.get(BodyKey(ref.Digest))
		switch {
		case err != nil:
			return fmt.Errorf("consensus: reading manifest %s: %w", d, err)
		case !ok:
			return fmt.Errorf("consensus: bytes of manifest %s are missing", d)
		}
		ref.Blobs, ref.Children, ref.BodyErr = references(body)
		if err := fn(ref); err != nil {
			return err
		}
	}
	return nil
}

// BlobLinks calls fn for every blob link, by repository then digest, until
// fn returns an error (which it returns).
func (v *View) BlobLinks(fn func(BlobLinkRef) error) error {
	prefix := []byte{prefixBlobLink}
	it := v.t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().KeyCopy(nil)
		repo, d, ok := splitPair(k[1:])
		if !ok {
			return fmt.Errorf("consensus: malformed blob link key %q", k)
		}
		var size uint64
		if err := it.Item().Value(func(b []byte) error { size = DecodeUint64(b); return nil }); err != nil {
			return fmt.Errorf("consensus: reading blob link %s in %s: %w", d, repo, err)
		}
		if err := fn(BlobLinkRef{Repo: repo, Digest: digest.Digest(d), Size: int64(size)}); err != nil {
			return err
		}
	}
	return nil
}

// splitPair splits <a>·<b>.
func splitPair(k []byte) (a, b string, ok bool) {
	i := bytes.IndexByte(k, sep)
	if i <= 0 || i == len(k)-1 {
		return "", "", false
	}
	return string(k[:i]), string(k[i+1:]), true
}

// references lists what a manifest body points at: for an image manifest
// (OCI or Docker schema 2) its config and layers, for an index (or list)
// its manifests; a subject is not included (the referrer does not keep its
// subject alive). It parses only the descriptors, so it accepts any media
// type the registry stores.
func references(body []byte) (blobs, children []digest.Digest, err error) {
	type desc struct {
		Digest digest.Digest `json:"digest"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Blobs     []desc `json:"blobs"` // OCI artifact manifests
		Manifests []desc `json:"manifests"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, nil, fmt.Errorf("consensus: parsing manifest body: %w", err)
	}
	if m.Config != nil && m.Config.Digest != "" {
		blobs = append(blobs, m.Config.Digest)
	}
	for _, l := range append(m.Layers, m.Blobs...) {
		blobs = append(blobs, l.Digest)
	}
	for _, c := range m.Manifests {
		children = append(children, c.Digest)
	}
	return blobs, children, nil
}
