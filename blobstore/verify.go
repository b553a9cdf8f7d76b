package blobstore

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrCorrupt is what reading or verifying a stored blob returns when its
// bytes no longer match its digest (bit rot, a stray write). The file has
// been moved to root/quarantine by then.
var ErrCorrupt = errors.New("blob on disk does not match its digest")

// maxStamps bounds the verified-files cache; past it the cache starts
// over (every blob is then hashed once more when next read).
const maxStamps = 1 << 18

// Verification of stored blobs.
//
// A blob file is verified when its bytes were hashed and matched its digest:
// at commit (Put, Upload, Partial hash what they write), when a reader of
// OpenVerified streamed it to the end, or by Verify (the scrub). The store
// then keeps a stamp of the file (inode, size, mtime, ctime) in memory. A
// file whose stamp still matches is served as a plain *os.File (sendfile);
// any other is hashed while it is read. Any write to the file, and any
// utimes that tries to hide one, changes its ctime and so drops it back to
// unverified. Decay below the filesystem (media errors that do not go
// through a syscall) does not change the stamp: the background scrub
// re-hashes every blob regardless of stamps to find that.
//
// Range reads of an unverified file hash the whole file first, once, before
// the first byte of the range is returned; afterwards the stamp makes every
// read zero-copy.

// verifiedStamp reports whether fi is the file the store last verified as d.
func (s *Store) verifiedStamp(d digest.Digest, fi fs.FileInfo) bool {
	s.stampMu.Lock()
	defer s.stampMu.Unlock()
	st, ok := s.stamps[d]
	return ok && st == stampOf(fi)
}

// suspect reports whether d was verified once and its file changed since.
func (s *Store) suspect(d digest.Digest, fi fs.FileInfo) bool {
	s.stampMu.Lock()
	defer s.stampMu.Unlock()
	st, ok := s.stamps[d]
	return ok && st != stampOf(fi)
}

func (s *Store) setStamp(d digest.Digest, fi fs.FileInfo) {
	s.stampMu.Lock()
	defer s.stampMu.Unlock()
	if s.stamps == nil || len(s.stamps) >= maxStamps {
		s.stamps = make(map[digest.Digest]fileStamp)
	}
	s.stamps[d] = stampOf(fi)
}

func (s *Store) dropStamp(d digest.Digest) {
	s.stampMu.Lock()
	defer s.stampMu.Unlock()
	delete(s.stamps, d)
}

// stampPath records the file now at blob d's path as verified.
func (s *Store) stampPath(d digest.Digest) {
	if fi, err := os.Lstat(s.blobPath(d)); err == nil {
		s.setStamp(d, fi)
	}
}

// OnCorrupt sets a function called each time a blob is found corrupt and
// quarantined, on the goroutine that found it (a reader, Verify): it must
// return quickly. Set it before the store is used.
func (s *Store) OnCorrupt(fn func(d digest.Digest, size int64, cause error)) {
	s.onCorrupt = fn
}

// Quarantined is how many corrupt blob files the store moved aside since it
// opened (the files stay in root/quarantine for inspection).
func (s *Store) Quarantined() int64 { return s.quarantined.Load() }

// Held reports whether the store holds d and has no reason to doubt it: the
// file exists and was not changed since it was last verified. It costs one
// lstat; an unverified file counts (Verify settles it).
func (s *Store) Held(d digest.Digest) bool {
	if validate(d) != nil {
		return false
	}
	fi, err := os.Lstat(s.blobPath(d))
	return err == nil && !s.suspect(d, fi)
}

// Verify makes sure blob d matches its digest. A file verified before and
// unchanged since passes at once unless force is set; otherwise the file
// is hashed, calling throttle (if not nil) before each chunk it reads, so
// a caller can bound the rate. A file that does not match is quarantined
// and Verify returns an error wrapping ErrCorrupt; a missing one
// ErrNotFound.
func (s *Store) Verify(ctx context.Context, d digest.Digest, force bool, throttle func(n int) error) error {
	if err := validate(d); err != nil {
		return err
	}
	if !force {
		// The common case (a repair sweep over verified blobs): one lstat.
		if fi, err := os.Lstat(s.blobPath(d)); err == nil && s.verifiedStamp(d, fi) {
			return nil
		}
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: verify %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("blobstore: verify %s: %w", d, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("blobstore: verify %s: %w", d, err)
	}
	if !force && s.verifiedStamp(d, fi) {
		return nil
	}
	h := d.Algorithm().Hash()
	buf := bufPool.Get().(*[bufSize]byte)
	defer bufPool.Put(buf)
	var off int64
	for off < fi.Size() {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := int(min(int64(bufSize), fi.Size()-off))
		if throttle != nil {
			if err := throttle(n); err != nil {
				return err
			}
		}
		m, err := f.ReadAt(buf[:n], off)
		h.Write(buf[:m])
		off += int64(m)
		if err != nil && !(err == io.EOF && m == n) {
			return fmt.Errorf("blobstore: verify %s: read at %d: %w", d, off, err)
		}
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		cause := fmt.Errorf("blobstore: verify %s: %w: the %d bytes on disk hash to %s", d, ErrCorrupt, fi.Size(), got)
		s.quarantine(d, f, cause)
		return cause
	}
	s.setStamp(d, fi)
	return nil
}

// OpenVerified opens blob d for a reader that must never get wrong bytes.
// A file verified before and unchanged since is returned as the *os.File
// itself (zero-copy). Any other is returned behind a reader that hashes
// while it reads and holds back the last chunk until the digest matched:
// on a mismatch the read fails with ErrCorrupt before the end, the file is
// quarantined and the OnCorrupt function is called. A reader that seeks
// before reading (a range) has the whole file hashed first.
func (s *Store) OpenVerified(d digest.Digest) (io.ReadSeekCloser, int64, error) {
	f, size, err := s.Open(d)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("blobstore: open %s: %w", d, err)
	}
	if s.verifiedStamp(d, fi) {
		return f, size, nil
	}
	return &verifyingReader{s: s, d: d, f: f, fi: fi, size: size, h: d.Algorithm().Hash()}, size, nil
}

// verifyingReader reads an unverified blob file and checks its digest by
// the time the last byte would be returned.
type verifyingReader struct {
	s    *Store
	d    digest.Digest
	f    *os.File
	fi   fs.FileInfo
	size int64

	off    int64     // next Read's offset
	h      hash.Hash // of the bytes [0, hashed)
	hashed int64
	ok     bool  // the whole file matched
	err    error // sticky: the file is corrupt
}

func (r *verifyingReader) Read(b []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.off >= r.size {
		if !r.ok && r.size == 0 {
			// An empty file (a blob truncated to nothing) is checked too.
			if err := r.check(); err != nil {
				return 0, err
			}
		}
		return 0, io.EOF
	}
	if !r.ok && r.off != r.hashed {
		// Not a sequential read from the start: hash the whole file first.
		if err := r.verifyAll(); err != nil {
			return 0, err
		}
	}
	n := min(int64(len(b)), r.size-r.off)
	m, err := r.f.ReadAt(b[:n], r.off)
	if err == io.EOF && int64(m) == n {
		err = nil
	}
	if err != nil {
		// Shorter than it was at open: someone truncated it.
		return 0, r.fail(fmt.Errorf("read at %d: %w", r.off, err))
	}
	if !r.ok {
		r.h.Write(b[:m])
		r.hashed += int64(m)
		if r.hashed == r.size {
			if err := r.check(); err != nil {
				return 0, err // the last chunk is never returned
			}
		}
	}
	r.off += int64(m)
	return m, nil
}

func (r *verifyingReader) check() error {
	if got := digest.NewDigest(r.d.Algorithm(), r.h); got != r.d {
		return r.fail(fmt.Errorf("the %d bytes on disk hash to %s", r.size, got))
	}
	r.ok = true
	r.s.setStamp(r.d, r.fi)
	return nil
}

// verifyAll hashes the whole file from the start.
func (r *verifyingReader) verifyAll() error {
	r.h.Reset()
	r.hashed = 0
	buf := bufPool.Get().(*[bufSize]byte)
	defer bufPool.Put(buf)
	for r.hashed < r.size {
		n := min(int64(bufSize), r.size-r.hashed)
		m, err := r.f.ReadAt(buf[:n], r.hashed)
		if err == io.EOF && int64(m) == n {
			err = nil
		}
		if err != nil {
			return r.fail(fmt.Errorf("read at %d: %w", r.hashed, err))
		}
		r.h.Write(buf[:m])
		r.hashed += int64(m)
	}
	return r.check()
}

func (r *verifyingReader) fail(why error) error {
	r.err = fmt.Errorf("blobstore: read %s: %w: %w", r.d, ErrCorrupt, why)
	r.s.quarantine(r.d, r.f, r.err)
	return r.err
}

func (r *verifyingReader) Seek(offset int64, whence int) (int64, error) {
	off, err := seekOffset(r.off, r.size, offset, whence)
	if err != nil {
		return 0, err
	}
	r.off = off
	return off, nil
}

func (r *verifyingReader) Close() error { return r.f.Close() }

// quarantine moves the corrupt file f, open as blob d, out of blobs/ into
// root/quarantine, unless the blob's path already holds another file (a
// good copy fetched meanwhile). It calls the OnCorrupt function when it
// moved the file, so each corrupt file is reported once.
//
//	<root>/quarantine/<alg>-<hex>-<unix nanoseconds>
func (s *Store) quarantine(d digest.Digest, f *os.File, cause error) {
	fi, err := f.Stat()
	if err != nil {
		s.logger.Warn("blobstore: stat a corrupt blob", "digest", d, "err", err)
		return
	}
	p := s.blobPath(d)
	s.commitMu.Lock()
	cur, err := os.Lstat(p)
	if err != nil || !os.SameFile(cur, fi) {
		s.commitMu.Unlock()
		return // replaced or removed already
	}
	dst := filepath.Join(s.root, "quarantine", string(d.Algorithm())+"-"+d.Encoded()+"-"+strconv.FormatInt(time.Now().UnixNano(), 10))
	err = os.Rename(p, dst)
	if err == nil {
		s.blobs.Add(-1)
		s.bytes.Add(-cur.Size())
		s.quarantined.Add(1)
	}
	s.commitMu.Unlock()
	s.dropStamp(d)
	if err != nil {
		// Leave it; reads keep failing before the end, so no client takes
		// it for good, and the next scrub tries again.
		s.logger.Error("blobstore: could not quarantine a corrupt blob", "digest", d, "err", err)
		return
	}
	s.logger.Error("blobstore: quarantined a corrupt blob", "digest", d, "file", dst, "cause", cause)
	if s.onCorrupt != nil {
		s.onCorrupt(d, cur.Size(), cause)
	}
}
