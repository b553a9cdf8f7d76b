package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/blobstore"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/manifest"
	"github.com/meshreg/meshreg/node/replicate"
)

// orCatchUp runs a metadata read; when it finds nothing, it catches up
// with the leader and reads again (see catchUp), so content acknowledged
// through another node a moment ago (a push to node 1, then a pull through
// node 3; a push acknowledged just before the leader died) is found here
// too, and a miss is a 404 only once this node has applied every write
// acknowledged before it. Only misses pay the round trip to the leader; a
// node that cannot reach one in time answers 503, not 404.
func orCatchUp[T any](ctx context.Context, n *Node, read func() (T, error)) (T, error) {
	v, err := read()
	if !errors.Is(err, consensus.ErrNotFound) {
		return v, err
	}
	if cerr := n.catchUp(ctx); cerr != nil {
		return v, cerr
	}
	return read()
}

func (n *Node) GetManifest(ctx context.Context, repo, reference string) (api.Manifest, error) {
	if up, upRepo, ok := n.mirror.Split(repo); ok {
		return n.mirrorManifest(ctx, repo, up, upRepo, reference)
	}
	d, err := n.resolve(ctx, repo, reference)
	if err != nil {
		return api.Manifest{}, err
	}
	m, err := orCatchUp(ctx, n, func() (consensus.ManifestRecord, error) { return n.meta.Manifest(repo, d) })
	if err != nil {
		return api.Manifest{}, metaError(err, oci.ManifestUnknown, "manifest "+d.String()+" is not in repository "+repo)
	}
	return api.Manifest{Digest: m.Digest, MediaType: m.MediaType, Body: m.Body}, nil
}

// resolve turns a reference into a digest, looking tags up.
func (n *Node) resolve(ctx context.Context, repo, reference string) (digest.Digest, error) {
	if manifest.IsDigest(reference) {
		return digest.Digest(reference), nil
	}
	d, err := orCatchUp(ctx, n, func() (digest.Digest, error) { return n.meta.ResolveTag(repo, reference) })
	return d, metaError(err, oci.ManifestUnknown, "tag "+reference+" is not in repository "+repo)
}

func (n *Node) PutManifest(ctx context.Context, repo, reference, contentType string, body []byte, tags []string) (digest.Digest, digest.Digest, error) {
	if err := n.disk.check(); err != nil {
		return "", "", err
	}
	if err := n.membershipError(); err != nil {
		return "", "", err
	}
	p, err := manifest.Parse(contentType, body)
	if err != nil {
		return "", "", manifestError(err)
	}
	d, err := manifest.Digest(reference, body)
	if err != nil {
		return "", "", manifestError(err)
	}
	rec := consensus.ManifestRecord{
		Repo:         repo,
		Digest:       d,
		MediaType:    p.MediaType,
		Body:         body,
		ArtifactType: p.ArtifactType,
		Annotations:  p.Annotations,
	}
	if p.Subject != nil {
		rec.Subject = p.Subject.Digest
	}
	if !manifest.IsDigest(reference) {
		tags = append([]string{reference}, tags...)
	}
	// The metadata store's bounds (tags per write, ...), before any work.
	if err := n.meta.CheckPutManifest(rec, tags...); err != nil {
		return "", "", metaError(err, oci.ManifestInvalid, "")
	}
	// The put carries the index the check below reads at or after: if a
	// garbage collection frees one of the blobs after it, the put fails
	// when applied (consensus/state/gc.go), never commits a manifest whose
	// blob is gone.
	rec.CheckIndex = n.meta.AppliedIndex()
	if err := n.checkReferences(repo, p); err != nil {
		// This node's state may lag the leader's: the blobs may have been
		// pushed through another node a moment ago. Catch up, then check
		// again.
		if !errors.Is(err, oci.ManifestBlobUnknown) {
			return "", "", err
		}
		if cerr := n.catchUp(ctx); cerr != nil {
			return "", "", cerr
		}
		rec.CheckIndex = n.meta.AppliedIndex()
		if err := n.checkReferences(repo, p); err != nil {
			return "", "", err
		}
	}
	refs := make([]replicate.Ref, len(p.Blobs))
	for i, b := range p.Blobs {
		refs[i] = replicate.Ref{Digest: b.Digest, Size: b.Size}
	}
	if err := n.ensureReplicas(ctx, refs); err != nil {
		return "", "", err
	}
	if n.opts.beforeManifestCommit != nil {
		n.opts.beforeManifestCommit(repo, d)
	}
	if err := n.meta.PutManifest(ctx, rec, tags...); err != nil {
		return "", "", metaError(n.disk.mapError(err), oci.ManifestUnknown, "storing manifest "+d.String())
	}
	return d, rec.Subject, nil
}

// checkReferences accepts a manifest only when every blob and child
// manifest it names is in the repository. The subject is exempt: a
// referrer may be pushed before its subject.
func (n *Node) checkReferences(repo string, p manifest.Manifest) error {
	for _, b := range p.Blobs {
		size, err := n.meta.BlobLink(repo, b.Digest)
		if errors.Is(err, consensus.ErrNotFound) {
			return oci.Errorf(oci.ManifestBlobUnknown, "blob %s is not in repository %s: push it before the manifest", b.Digest, repo).
				WithDetail(map[string]string{"digest": b.Digest.String()})
		}
		if err != nil {
			return metaError(err, oci.BlobUnknown, "")
		}
		if size != b.Size {
			return oci.Errorf(oci.ManifestInvalid, "descriptor of blob %s says %d bytes but the blob has %d", b.Digest, b.Size, size)
		}
	}
	for _, c := range p.Children {
		_, err := n.meta.Manifest(repo, c.Digest)
		if errors.Is(err, consensus.ErrNotFound) {
			return oci.Errorf(oci.ManifestBlobUnknown, "manifest %s is not in repository %s: push it before the index", c.Digest, repo).
				WithDetail(map[string]string{"digest": c.Digest.String()})
		}
		if err != nil {
			return metaError(err, oci.ManifestUnknown, "")
		}
	}
	return nil
}

func (n *Node) DeleteManifest(ctx context.Context, repo, reference string) error {
	if manifest.IsDigest(reference) {
		err := n.meta.DeleteManifest(ctx, repo, digest.Digest(reference))
		return metaError(err, oci.ManifestUnknown, "manifest "+reference+" is not in repository "+repo)
	}
	err := n.meta.DeleteTag(ctx, repo, reference)
	return metaError(err, oci.ManifestUnknown, "tag "+reference+" is not in repository "+repo)
}

func (n *Node) Tags(ctx context.Context, repo, last string, limit int) ([]string, error) {
	tags, err := orCatchUp(ctx, n, func() ([]string, error) { return n.meta.Tags(repo, last, limit) })
	return tags, metaError(err, oci.NameUnknown, "repository "+repo+" is not known to this registry")
}

func (n *Node) Repositories(ctx context.Context, last string, limit int) ([]string, error) {
	repos, err := n.meta.Repositories(last, limit)
	return repos, metaError(err, oci.NameUnknown, "listing repositories")
}

func (n *Node) Referrers(ctx context.Context, repo string, subject digest.Digest, artifactType, last string, limit int) ([]ocispec.Descriptor, error) {
	descs, err := n.meta.Referrers(repo, subject, artifactType, last, limit)
	if errors.Is(err, consensus.ErrNotFound) {
		return []ocispec.Descriptor{}, nil
	}
	return descs, metaError(err, oci.Unknown, "")
}

// StatBlob answers from the metadata: a blob linked to the repository
// exists in the registry, on this node or on peers.
func (n *Node) StatBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	size, err := n.blobLink(ctx, repo, d)
	if err != nil {
		if m, merr := n.meta.Manifest(repo, d); merr == nil {
			return int64(len(m.Body)), nil
		}
		return 0, metaError(err, oci.BlobUnknown, "blob "+d.String()+" is not in repository "+repo)
	}
	return size, nil
}

// OpenBlob reads a blob from this node's disk, or else from peers: the
// client's response streams while the fetch writes the blob here.
func (n *Node) OpenBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadSeekCloser, int64, error) {
	linked, err := n.blobLink(ctx, repo, d)
	if err != nil {
		// Manifests are content too: serve one that is asked for as a blob,
		// as CNCF Distribution does.
		if m, merr := n.meta.Manifest(repo, d); merr == nil {
			return nopCloser{bytes.NewReader(m.Body)}, int64(len(m.Body)), nil
		}
		return nil, 0, metaError(err, oci.BlobUnknown, "blob "+d.String()+" is not in repository "+repo)
	}
	// In use until the reader closes: garbage collection and eviction
	// keep it.
	release := n.pinBlob(d)
	if n.evictor != nil {
		n.noteRead(d, n.mirrorOrigin(repo))
	}
	r, size, err := n.openLinkedBlob(ctx, repo, d, linked)
	if err != nil {
		release()
		return nil, 0, err
	}
	return pinned(r, release), size, nil
}

// openLinkedBlob opens blob d, linked with size linked, from this node's
// disk or from peers.
func (n *Node) openLinkedBlob(ctx context.Context, repo string, d digest.Digest, linked int64) (io.ReadSeekCloser, int64, error) {
	// Verified as it streams: a copy that rotted on disk is cut short
	// before its last byte, quarantined and fetched again (blobCorrupt).
	f, size, err := n.blobs.OpenVerified(d)
	if err == nil && size != linked {
		// Truncated or grown: Verify quarantines it (a 0-byte file would
		// otherwise be "served" without a byte read to check).
		// Fetch it with the size the metadata knows before the
		// quarantine's own repair would guess it from the bad file.
		f.Close()
		if _, ferr := n.startFetch(d, linked, nil); ferr != nil {
			n.log.Warn("cannot fetch a good copy of a blob of the wrong size", "digest", d, "err", ferr)
		}
		_ = n.blobs.Verify(ctx, d, false, nil)
		f, size, err = n.blobs.OpenVerified(d)
	}
	if errors.Is(err, blobstore.ErrNotFound) {
		r, err := n.openFetched(ctx, d, linked, n.mirrorOrigin(repo))
		if err != nil {
			return nil, 0, err
		}
		return r, linked, nil
	}
	if err != nil {
		return nil, 0, blobError(err, d)
	}
	n.metrics.reads.WithLabelValues("local").Inc()
	return f, size, nil
}

// blobLink is the size of blob d in repo from the metadata, caught up with
// the leader on a miss.
func (n *Node) blobLink(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	return orCatchUp(ctx, n, func() (int64, error) { return n.meta.BlobLink(repo, d) })
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }

// DeleteBlob unlinks the blob from the repository. The bytes stay on disk,
// since other repositories may link them.
func (n *Node) DeleteBlob(ctx context.Context, repo string, d digest.Digest) error {
	err := n.meta.UnlinkBlob(ctx, repo, d)
	return metaError(err, oci.BlobUnknown, "blob "+d.String()+" is not in repository "+repo)
}

func (n *Node) PutBlob(ctx context.Context, repo string, d digest.Digest, r io.Reader) (int64, error) {
	if err := n.disk.checkBlob(); err != nil {
		return 0, err
	}
	// Kept from garbage collection until linked (its file may be an old
	// copy the collection is about to free).
	defer n.pinBlob(d)()
	size, err := n.blobs.Put(d, n.disk.reader(r))
	if err != nil {
		return 0, blobError(n.disk.mapError(err), d)
	}
	n.announce(d)
	n.blobCommitted()
	return size, n.link(ctx, repo, d, size)
}

// announce tells the DHT, in the background, that this node holds d.
func (n *Node) announce(d digest.Digest) {
	n.bg.Go(func() { n.provide(d) })
}

func (n *Node) link(ctx context.Context, repo string, d digest.Digest, size int64) error {
	if err := n.membershipError(); err != nil {
		return err
	}
	err := n.meta.LinkBlob(ctx, repo, d, size)
	return metaError(n.disk.mapError(err), oci.BlobUnknown, "linking blob "+d.String()+" to repository "+repo)
}

// MountBlob links d into repo when repository from links it (the bytes
// may be on peers). Without from it mounts nothing: a blob this node holds
// for some repository is not the client's to take, so the spec's fallback
// (a new upload session) applies, and the client proves it has the bytes.
func (n *Node) MountBlob(ctx context.Context, repo, from string, d digest.Digest) (bool, error) {
	if from == "" {
		return false, nil
	}
	if err := n.disk.check(); err != nil {
		return false, err
	}
	size, err := n.meta.BlobLink(from, d)
	if errors.Is(err, consensus.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, metaError(err, oci.BlobUnknown, "")
	}
	return true, n.link(ctx, repo, d, size)
}

func (n *Node) StartUpload(ctx context.Context, repo string) (string, error) {
	if err := n.disk.checkBlob(); err != nil {
		return "", err
	}
	client := api.ClientFromContext(ctx)
	u, err := n.blobs.NewUploadFor(client)
	if errors.Is(err, blobstore.ErrTooManyUploads) {
		return "", oci.Wrap(oci.TooManyRequests, err, fmt.Sprintf(
			"too many upload sessions open (at most %d on this node, %d per client): finish or cancel yours (DELETE its Location), or retry once idle ones expire",
			n.cfg.MaxUploads, n.cfg.MaxUploadsPerClient))
	}
	if err != nil {
		return "", fmt.Errorf("starting upload: %w", n.disk.mapError(err))
	}
	n.mu.Lock()
	n.uploads[u.ID()] = repo
	n.mu.Unlock()
	return u.ID(), nil
}

// upload finds a session opened for repo.
func (n *Node) upload(repo, id string) (Upload, error) {
	n.mu.Lock()
	owner, ok := n.uploads[id]
	n.mu.Unlock()
	if !ok || owner != repo {
		return nil, oci.Errorf(oci.BlobUploadUnknown, "upload %s is not open for repository %s: start a new upload", truncateID(id), repo)
	}
	u, err := n.blobs.Upload(id)
	if err != nil {
		n.forget(id)
		return nil, blobError(err, "")
	}
	return u, nil
}

func (n *Node) forget(id string) {
	n.mu.Lock()
	delete(n.uploads, id)
	n.mu.Unlock()
}

func (n *Node) UploadSize(ctx context.Context, repo, id string) (int64, error) {
	u, err := n.upload(repo, id)
	if err != nil {
		return 0, err
	}
	return u.Size(), nil
}

func (n *Node) AppendUpload(ctx context.Context, repo, id string, r io.Reader) (int64, error) {
	u, err := n.upload(repo, id)
	if err != nil {
		return 0, err
	}
	if err := n.disk.checkBlob(); err != nil {
		return 0, err
	}
	if _, err := u.Append(n.disk.reader(r)); err != nil {
		if n.disk.isFull(err) {
			// The session is unchanged; resume once space is free.
			return 0, n.disk.mapError(err)
		}
		return 0, oci.Wrap(oci.BlobUploadInvalid, err, "appending to upload "+id+" failed; the session is unchanged, resume it")
	}
	return u.Size(), nil
}

func (n *Node) FinishUpload(ctx context.Context, repo, id string, d digest.Digest) (int64, error) {
	u, err := n.upload(repo, id)
	if err != nil {
		return 0, err
	}
	if err := n.disk.check(); err != nil {
		return 0, err
	}
	defer n.pinBlob(d)() // as in PutBlob
	size, err := u.Commit(d)
	if err != nil {
		return 0, blobError(n.disk.mapError(err), d)
	}
	n.announce(d)
	n.blobCommitted()
	n.forget(id)
	return size, n.link(ctx, repo, d, size)
}

func (n *Node) CancelUpload(ctx context.Context, repo, id string) error {
	u, err := n.upload(repo, id)
	if err != nil {
		return err
	}
	n.forget(id)
	return blobError(u.Cancel(), "")
}

func truncateID(id string) string {
	if len(id) > 64 {
		return id[:64] + "…"
	}
	return id
}
