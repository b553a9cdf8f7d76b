package state

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// Garbage collection in the state (the node's gc package drives it).
//
// A collection marks at one applied index M (a View): the blobs linked to
// repositories that no manifest references are candidates, unless linked
// within the grace period. Its decision is an OpGCSweep entry, applied at
// index S > M. Between M and S pushes go on; the state closes that window
// on both sides, deterministically on every node:
//
//   - every link and every manifest put records a touch of the blobs it
//     names (k<digest>: the entry's index, and for a link the proposer's
//     time; a sweep drops the touches of the blobs it collects). Applying the sweep skips each digest touched after M, or
//     linked at or after the cutoff: a manifest or link committed after the
//     mark revives the blob. The others are unlinked and tombstoned (their
//     index S);
//   - a manifest put carries the index its blob check was made at
//     (CheckIndex). If one of its blobs was tombstoned after that index,
//     the put fails with ErrBlobCollected: the bytes may be gone, and the
//     client pushes the blob again (which links it again).
//
// So no manifest that was acknowledged ever references a collected blob:
// either its put applied before S (and touched the blob, which the sweep
// then skips) or after S (and it fails unless the blob was linked again).
//
// Tombstones are bounded: each sweep prunes, tombstonePruneBatch at a time,
// the tombstones of collections that marked before its own mark and began
// more than TombstoneRetention before it, and keeps the highest pruned
// index as the floor (KeyGCFloor). A put whose check is older than the
// floor cannot be judged any more and fails the same way.

// Bounds of an OpGCSweep (see limits.go for the others).
const (
	// MaxSweepBlobs bounds the blobs one OpGCSweep unlinks.
	MaxSweepBlobs = 1000
	// MaxSweepLinks bounds the repository links one OpGCSweep removes, so
	// that its writes stay far inside one badger transaction. A blob
	// linked to more repositories than this is never collected.
	MaxSweepLinks = 4000
	// tombstonePruneBatch bounds the old tombstones one sweep prunes.
	tombstonePruneBatch = 1000
	// TombstoneRetention is how long a tombstone is kept after its
	// collection began (see pruneTombstones).
	TombstoneRetention = time.Hour
)

// Tombstone is a blob a sweep collected: the index of the OpGCSweep, the
// index its collection marked at, when it began and its cutoff (Unix
// nanoseconds).
type Tombstone struct {
	Index     uint64
	Digest    digest.Digest
	MarkIndex uint64
	Start     int64
	Cutoff    int64
}

func (c Command) checkSweep() error {
	switch {
	case c.Repo != "" || c.Digest != "" || c.Tag != "" || c.Size != 0 || c.CheckIndex != 0 || c.Name != "" ||
		len(c.Tags) > 0 || c.MediaType != "" || c.ArtifactType != "" || c.Subject != "" || len(c.Annotations) > 0 || len(c.Body) > 0:
		return fmt.Errorf("a GC sweep carries only its mark index, times and blobs")
	case c.MarkIndex == 0:
		return fmt.Errorf("a GC sweep needs the index it marked at")
	case c.Time < 0 || c.Cutoff < 0 || c.Cutoff > c.Time:
		return fmt.Errorf("GC sweep times out of range (start %d, cutoff %d)", c.Time, c.Cutoff)
	case len(c.Sweep) == 0 || len(c.Sweep) > MaxSweepBlobs:
		return fmt.Errorf("a GC sweep names %d blobs: 1..%d", len(c.Sweep), MaxSweepBlobs)
	}
	links := 0
	for i, b := range c.Sweep {
		if err := checkDigest(b.Digest); err != nil {
			return err
		}
		if i > 0 && c.Sweep[i-1].Digest >= b.Digest {
			return fmt.Errorf("GC sweep blobs must be sorted and distinct (%s)", truncate(string(b.Digest)))
		}
		if len(b.Repos) == 0 {
			return fmt.Errorf("GC sweep blob %s names no repository", b.Digest)
		}
		links += len(b.Repos)
		if links > MaxSweepLinks {
			return fmt.Errorf("a GC sweep removes more than %d links", MaxSweepLinks)
		}
		for j, r := range b.Repos {
			if err := checkRepo(r); err != nil {
				return err
			}
			if j > 0 && b.Repos[j-1] >= r {
				return fmt.Errorf("GC sweep repositories of %s must be sorted and distinct", b.Digest)
			}
		}
	}
	return nil
}

// carriesSweep reports whether any field of an OpGCSweep is set.
func (c Command) carriesSweep() bool {
	return c.MarkIndex != 0 || c.Cutoff != 0 || len(c.Sweep) > 0
}

// touch records that the entry at index names d; at is a link's time (0:
// keep the time of the latest link).
func (t tx) touch(d digest.Digest, index uint64, at int64) error {
	if !validName(string(d)) {
		return nil
	}
	if at == 0 {
		_, prev, err := t.touched(d)
		if err != nil {
			return err
		}
		at = prev
	}
	v := binary.BigEndian.AppendUint64(EncodeUint64(index), uint64(at))
	return t.Set(touchKey(d), v)
}

// touched returns the latest touch of d (0, 0 if none).
func (t tx) touched(d digest.Digest) (index uint64, at int64, err error) {
	v, ok, err := t.get(touchKey(d))
	if err != nil || !ok || len(v) != 16 {
		return 0, 0, err
	}
	return binary.BigEndian.Uint64(v[:8]), int64(binary.BigEndian.Uint64(v[8:])), nil
}

// tombstone returns the index of the sweep that collected d (0 if none).
func (t tx) tombstone(d digest.Digest) (uint64, error) {
	v, _, err := t.get(tombKey(d))
	return DecodeUint64(v), err
}

// touchManifest touches the blobs a manifest put references (its config
// and layers). Manifests themselves are never collected, so the manifest,
// its children and its subject need no touch.
func (t tx) touchManifest(c Command, index uint64) error {
	blobs, _, _ := references(c.Body)
	for _, d := range blobs {
		if err := t.touch(d, index, 0); err != nil {
			return err
		}
	}
	return nil
}

// checkCollected fails a manifest put whose blobs were collected after
// its check index (resp ErrBlobCollected).
func (t tx) checkCollected(c Command) (resp, err error) {
	refs, _, perr := references(c.Body)
	if perr != nil {
		return nil, nil
	}
	if len(refs) == 0 {
		return nil, nil
	}
	floor, _, err := t.get([]byte(KeyGCFloor))
	if err != nil {
		return nil, err
	}
	if f := DecodeUint64(floor); f > c.CheckIndex {
		return fmt.Errorf("consensus: %w: the push checked its blobs at index %d, before garbage collections that are no longer recorded (up to %d); push the image again",
			ErrBlobCollected, c.CheckIndex, f), nil
	}
	for _, d := range refs {
		ti, err := t.tombstone(d)
		if err != nil {
			return nil, err
		}
		if ti > c.CheckIndex {
			return fmt.Errorf("consensus: %w: blob %s was garbage-collected while this push was in flight; push it again",
				ErrBlobCollected, truncate(string(d))), nil
		}
	}
	return nil, nil
}

// gcSweep applies an OpGCSweep at index (see the top of this file).
func (t tx) gcSweep(c Command, index uint64) (resp, err error) {
	if c.MarkIndex >= index {
		return fmt.Errorf("consensus: %w: GC sweep marked at index %d, not before its own index %d", ErrInvalidCommand, c.MarkIndex, index), nil
	}
	if err := t.pruneTombstones(c.MarkIndex, c.Time); err != nil {
		return nil, err
	}
	val := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(EncodeUint64(uint64(c.Time)), uint64(c.Cutoff)), c.MarkIndex)
	repos := map[string]bool{} // repositories that lost a link
	for _, b := range c.Sweep {
		ti, at, err := t.touched(b.Digest)
		if err != nil {
			return nil, err
		}
		if ti > c.MarkIndex || at >= c.Cutoff {
			continue // linked or referenced since the mark, or within the grace: revived
		}
		for _, repo := range b.Repos {
			if err := t.Delete(blobLinkKey(repo, b.Digest)); err != nil {
				return nil, err
			}
			repos[repo] = true
		}
		// The touch is no longer needed (nothing touched it since the
		// mark): dropping it keeps the touches bounded by the digests
		// still linked or referenced.
		if err := t.Delete(touchKey(b.Digest)); err != nil {
			return nil, err
		}
		if err := t.Set(tombKey(b.Digest), EncodeUint64(index)); err != nil {
			return nil, err
		}
		if err := t.Set(tombLogKey(index, b.Digest), val); err != nil {
			return nil, err
		}
	}
	// Once per repository, in byte order (deterministic): an iterator
	// over a transaction with many writes is not cheap.
	names := make([]string, 0, len(repos))
	for r := range repos {
		names = append(names, r)
	}
	slices.Sort(names)
	for _, r := range names {
		if err := t.forgetRepoIfEmpty(r); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// pruneTombstones drops up to tombstonePruneBatch tombstones of earlier
// collections (written before mark) whose collection began more than
// TombstoneRetention before now (the sweep's start), raising the floor to
// the highest index dropped. A put checked before the floor fails, so the
// retention is how long a push may take between its blob check and its
// commit before a collection in between makes it retry.
func (t tx) pruneTombstones(mark uint64, now int64) error {
	prefix := []byte{prefixTombLog}
	it := t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	var old [][]byte
	for it.Rewind(); it.Valid() && len(old) < tombstonePruneBatch; it.Next() {
		k := it.Item().KeyCopy(nil)
		if len(k) < 9 || binary.BigEndian.Uint64(k[1:9]) >= mark {
			break
		}
		var start int64
		if err := it.Item().Value(func(v []byte) error {
			if len(v) >= 8 {
				start = int64(binary.BigEndian.Uint64(v[:8]))
			}
			return nil
		}); err != nil {
			it.Close()
			return err
		}
		if start > now-int64(TombstoneRetention) {
			break // by index, later ones are (about) as young
		}
		old = append(old, k)
	}
	it.Close()
	if len(old) == 0 {
		return nil
	}
	v, _, err := t.get([]byte(KeyGCFloor))
	if err != nil {
		return err
	}
	floor := DecodeUint64(v)
	for _, k := range old {
		idx, d := binary.BigEndian.Uint64(k[1:9]), digest.Digest(k[9:])
		if err := t.Delete(k); err != nil {
			return err
		}
		cur, err := t.tombstone(d)
		if err != nil {
			return err
		}
		if cur == idx {
			if err := t.Delete(tombKey(d)); err != nil {
				return err
			}
		}
		floor = max(floor, idx)
	}
	return t.Set([]byte(KeyGCFloor), EncodeUint64(floor))
}

// Tombstones returns up to n tombstones written at indexes above after,
// by index then digest.
func (r Reader) Tombstones(after uint64, n int) ([]Tombstone, error) {
	prefix := []byte{prefixTombLog}
	it := r.t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var out []Tombstone
	for it.Seek(binary.BigEndian.AppendUint64(slices.Clone(prefix), after+1)); it.Valid() && len(out) < n; it.Next() {
		k := it.Item().Key()
		if len(k) < 9 || !bytes.HasPrefix(k, prefix) {
			continue
		}
		ts := Tombstone{Index: binary.BigEndian.Uint64(k[1:9]), Digest: digest.Digest(k[9:])}
		if err := it.Item().Value(func(v []byte) error {
			if len(v) == 24 {
				ts.Start = int64(binary.BigEndian.Uint64(v[:8]))
				ts.Cutoff = int64(binary.BigEndian.Uint64(v[8:16]))
				ts.MarkIndex = binary.BigEndian.Uint64(v[16:])
			}
			return nil
		}); err != nil {
			return out, fmt.Errorf("consensus: reading tombstone %s: %w", ts.Digest, err)
		}
		out = append(out, ts)
	}
	return out, nil
}

// BlobGC returns what garbage collection knows of d: the index of the
// latest entry that linked or referenced it, and of the sweep that
// collected it (0 if none). A node deletes its copy of a collected blob
// only while touched is not above tomb.
func (r Reader) BlobGC(d digest.Digest) (touched, tomb uint64, err error) {
	if touched, _, err = r.t.touched(d); err != nil {
		return 0, 0, err
	}
	tomb, err = r.t.tombstone(d)
	return touched, tomb, err
}

// Touched returns the latest touch of d: the index of the latest entry that
// linked or referenced it and the proposer time of its latest link (Unix
// nanoseconds); zeros if none.
func (v *View) Touched(d digest.Digest) (index uint64, at int64, err error) {
	return v.t.touched(d)
}
