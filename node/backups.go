package node

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/node/backup"
)

// backupSource is the metadata store's backup ability (consensus.Store has
// it; test fakes need not).
type backupSource interface {
	Backup(fn func(b *consensus.Backup) error) error
}

// ErrBackupUnsupported: this node's metadata store cannot take backups.
var ErrBackupUnsupported = errors.New("this node's metadata store takes no backups")

// backupBlob is a blob a backup holds: a repository it is linked to (to
// read it through the normal read path) and its size.
type backupBlob struct {
	d    digest.Digest
	repo string
	size int64
}

// Backup writes a backup archive (package backup) to w: the metadata as the
// FSM snapshot at the index applied now and, with blobs, every blob the
// metadata links, read through the normal read path (from this disk, or
// fetched from peers as a pull would: streamed, never whole in memory).
// The blobs are those of the snapshot's blob links, whatever is written
// meanwhile. An error leaves the archive without its trailer, which no
// reader accepts.
func (n *Node) Backup(ctx context.Context, w io.Writer, blobs bool) error {
	src, ok := n.meta.(backupSource)
	if !ok {
		return ErrBackupUnsupported
	}
	start := time.Now()
	aw := backup.NewWriter(w)
	var list []backupBlob
	var m backup.Manifest
	err := src.Backup(func(b *consensus.Backup) error {
		m = backup.Manifest{NodeID: n.host.ID().String(), Version: n.cfg.Version, Created: time.Now().UTC(),
			Index: b.Index, Term: b.Term, WithBlobs: blobs}
		byDigest := map[digest.Digest]backupBlob{}
		err := b.View(func(v *state.View) error {
			repos := map[string]bool{}
			err := v.Manifests(func(r state.ManifestRef) error {
				repos[r.Repo] = true
				m.Manifests++
				m.Tags += len(r.Tags)
				return nil
			})
			if err != nil {
				return err
			}
			m.Repositories = len(repos)
			if !blobs {
				return nil
			}
			return v.BlobLinks(func(l state.BlobLinkRef) error {
				if _, ok := byDigest[l.Digest]; !ok {
					byDigest[l.Digest] = backupBlob{d: l.Digest, repo: l.Repo, size: l.Size}
				}
				if len(byDigest) > backup.MaxBlobs {
					return fmt.Errorf("node: more than %d blobs: above what one backup archive holds", backup.MaxBlobs)
				}
				return nil
			})
		})
		if err != nil {
			return err
		}
		for _, bb := range byDigest {
			list = append(list, bb)
			m.BlobBytes += bb.size
		}
		slices.SortFunc(list, func(a, b backupBlob) int { return cmp.Compare(a.d, b.d) })
		m.Blobs = len(list)
		if m.MetadataSize, m.MetadataSHA256, err = b.StateSize(); err != nil {
			return err
		}
		if err := aw.WriteManifest(m); err != nil {
			return err
		}
		pr, pw := io.Pipe()
		done := make(chan struct{})
		go func() { // ends when the stream is written or the reader gave up
			defer close(done)
			pw.CloseWithError(b.WriteState(pw))
		}()
		err = aw.WriteMetadata(m.MetadataSize, pr)
		pr.CloseWithError(errors.New("backup: metadata entry finished"))
		<-done
		return err
	})
	if err != nil {
		return fmt.Errorf("node: backup of the metadata: %w", err)
	}
	for i, bb := range list {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("node: backup stopped after %d of %d blobs: %w", i, len(list), err)
		}
		if err := n.backupBlob(ctx, aw, bb); err != nil {
			return fmt.Errorf("node: backup stopped after %d of %d blobs: %w", i, len(list), err)
		}
	}
	if err := aw.Close(); err != nil {
		return err
	}
	n.log.Info("backup written", "raft_index", m.Index, "manifests", m.Manifests, "tags", m.Tags,
		"blobs", m.Blobs, "blob_bytes", m.BlobBytes, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (n *Node) backupBlob(ctx context.Context, aw *backup.Writer, bb backupBlob) error {
	r, size, err := n.OpenBlob(ctx, bb.repo, bb.d)
	if err != nil {
		return fmt.Errorf("reading blob %s of %s: %w", bb.d, bb.repo, err)
	}
	defer r.Close()
	if size != bb.size {
		return fmt.Errorf("blob %s of %s is %d bytes, its link says %d", bb.d, bb.repo, size, bb.size)
	}
	return aw.WriteBlob(bb.d, bb.size, r)
}
