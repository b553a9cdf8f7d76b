// Package blobstore keeps content-addressed blobs on local disk.
//
// A blob on disk is always complete and matches its digest: bytes are hashed as
// they are written to a temp file in the same filesystem, fsynced, and renamed
// into place. Resumable uploads (Upload) are temp files too, and a store empties
// its temp directory when it opens, so a process killed mid-write leaves nothing
// visible behind.
//
// All methods are safe for concurrent use.
package blobstore

import (
	_ "crypto/sha256" // registers digest.SHA256
	_ "crypto/sha512" // registers digest.SHA512
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

var (
	// Every error the package returns starts with "blobstore: " and says
	// which operation failed; these are wrapped, so test with errors.Is.
	ErrNotFound             = errors.New("blob not found")
	ErrDigestMismatch       = errors.New("digest mismatch")
	ErrUnsupportedAlgorithm = errors.New("unsupported digest algorithm")
	ErrUploadNotFound       = errors.New("upload not found")
)

const (
	dirPerm  = 0o750
	filePerm = 0o600
)

// Store is a directory of blobs. Open one per root; a second Store on the same
// root would delete the first one's uploads when it opens.
type Store struct {
	root    string
	uploads string // root/uploads
	logger  *slog.Logger

	// commitMu makes "is it there? rename/remove it" one step, so Stats
	// count a blob once even when several pushes of it commit together.
	commitMu sync.Mutex
	blobs    atomic.Int64
	bytes    atomic.Int64

	uploadsMu sync.Mutex
	sessions  map[string]*Upload

	// Verification (verify.go): stamps of the files verified since open.
	stampMu     sync.Mutex
	stamps      map[digest.Digest]fileStamp
	onCorrupt   func(d digest.Digest, size int64, cause error)
	quarantined atomic.Int64
	owners      map[string]int // open sessions per owner (upload.go)
	limits      UploadLimits
}

// Open opens (creating if needed) the store under root. It removes every
// leftover temp file from root/uploads and counts the blobs for Stats.
// A nil logger discards logs.
func Open(root string, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		root:     root,
		uploads:  filepath.Join(root, "uploads"),
		logger:   logger,
		sessions: make(map[string]*Upload),
		stamps:   make(map[digest.Digest]fileStamp),
	}
	for _, dir := range []string{
		s.uploads,
		filepath.Join(root, "quarantine"),
		filepath.Join(root, "blobs", string(digest.SHA256)),
		filepath.Join(root, "blobs", string(digest.SHA512)),
	} {
		if err := os.MkdirAll(dir, dirPerm); err != nil {
			return nil, fmt.Errorf("blobstore: open %s: %w", root, err)
		}
	}
	removed, err := s.removeLeftovers()
	if err != nil {
		return nil, fmt.Errorf("blobstore: open %s: %w", root, err)
	}
	if err := s.count(); err != nil {
		return nil, fmt.Errorf("blobstore: open %s: %w", root, err)
	}
	blobs, bytes := s.Stats()
	logger.Info("blobstore opened", "root", root, "blobs", blobs, "bytes", bytes,
		"removed_uploads", removed)
	return s, nil
}

// removeLeftovers empties root/uploads. Upload sessions live only in memory,
// so after a restart every file there is an orphan.
func (s *Store) removeLeftovers() (int, error) {
	entries, err := os.ReadDir(s.uploads)
	if err != nil {
		return 0, fmt.Errorf("clean uploads: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.uploads, e.Name())); err != nil {
			return 0, fmt.Errorf("clean uploads: %w", err)
		}
	}
	return len(entries), nil
}

// count walks blobs/ once; afterwards commit and Delete keep the totals.
func (s *Store) count() error {
	return filepath.WalkDir(filepath.Join(s.root, "blobs"), func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return fmt.Errorf("count blobs: %w", err)
		}
		s.blobs.Add(1)
		s.bytes.Add(fi.Size())
		return nil
	})
}

// blobPath returns where blob d lives. d must have passed validate: this is the
// only place a digest becomes a path.
//
//	<root>/
//	├── blobs/
//	│   ├── sha256/
//	│   │   └── 3f/
//	│   │       └── 3fa8…e1     one complete, verified blob per file
//	│   └── sha512/
//	│       └── 9b/
//	│           └── 9b71…0c
//	├── uploads/                temp files; emptied by Open
//	│   ├── 5c0e…a7             resumable upload session (32 hex = its id)
//	│   └── put-1234567         Put in progress
//	└── quarantine/             blob files found corrupt (verify.go), kept
//	    └── sha256-3fa8…e1-<unix ns>   for inspection; delete them freely
//
// Temp files share the filesystem with blobs/ so a commit is one atomic rename.
func (s *Store) blobPath(d digest.Digest) string {
	enc := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), enc[:2], enc)
}

// validate admits only well-formed sha256 and sha512 digests, so that a digest
// taken from a URL ("sha256:../../etc") never reaches the filesystem. Malformed
// digests wrap go-digest's ErrDigestInvalidFormat or ErrDigestInvalidLength.
func validate(d digest.Digest) error {
	err := d.Validate()
	if errors.Is(err, digest.ErrDigestUnsupported) ||
		err == nil && d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512 {
		return fmt.Errorf("blobstore: digest %.80q: %w", d, ErrUnsupportedAlgorithm)
	}
	if err != nil {
		return fmt.Errorf("blobstore: digest %.80q: %w", d, err)
	}
	return nil
}

// Stat returns the size of blob d, or ErrNotFound.
func (s *Store) Stat(d digest.Digest) (int64, error) {
	if err := validate(d); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("blobstore: stat %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("blobstore: stat %s: %w", d, err)
	}
	return fi.Size(), nil
}

// Open opens blob d for reading; the caller closes f. It is an *os.File so
// that http.ServeContent can serve ranges and the kernel can use sendfile.
func (s *Store) Open(d digest.Digest) (f *os.File, size int64, err error) {
	if err := validate(d); err != nil {
		return nil, 0, err
	}
	f, err = os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("blobstore: open %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("blobstore: open %s: %w", d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("blobstore: open %s: %w", d, err)
	}
	return f, fi.Size(), nil
}

// Delete removes blob d, or returns ErrNotFound. Readers that already opened
// it keep reading the old inode. The directory is not fsynced: a delete lost
// in a crash only brings back a correct blob.
func (s *Store) Delete(d digest.Digest) error {
	if err := validate(d); err != nil {
		return err
	}
	p := s.blobPath(d)
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: delete %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("blobstore: delete %s: %w", d, err)
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("blobstore: delete %s: %w", d, err)
	}
	s.blobs.Add(-1)
	s.bytes.Add(-fi.Size())
	s.dropStamp(d)
	return nil
}

// Stats returns how many blobs the store holds and their total size.
func (s *Store) Stats() (blobs int64, bytes int64) {
	return s.blobs.Load(), s.bytes.Load()
}

// commit moves tmp, a verified and fsynced file of size bytes, into place as
// blob d. If d is already there (a concurrent push of the same bytes) tmp is
// removed instead. Either way the blob's directory is fsynced before commit
// returns, so success means the blob survives a crash.
func (s *Store) commit(tmp string, d digest.Digest, size int64) error {
	dst := s.blobPath(d)
	if err := s.place(d, tmp, dst, size); err != nil {
		return err
	}
	return syncDir(filepath.Dir(dst))
}

// place renames tmp to dst unless dst exists and was verified. commitMu makes
// the check and the rename one step, so Stats count each blob once. An
// existing file not verified since the store opened is replaced by tmp,
// which was just verified: a push of a blob heals a copy that rotted.
func (s *Store) place(d digest.Digest, tmp, dst string, size int64) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	dir := filepath.Dir(dst)
	if err := os.Mkdir(dir, dirPerm); err == nil {
		// A new shard directory is durable only once its parent is synced.
		// That happens at most 256 times per algorithm, so doing it under
		// the lock costs nothing.
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return err
	}
	old, err := os.Lstat(dst)
	if err == nil && s.verifiedStamp(d, old) {
		if err := os.Remove(tmp); err != nil {
			// The blob is in place; the orphan goes at the next Open.
			s.logger.Warn("blobstore: remove duplicate temp file", "err", err)
		}
		return nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	if old == nil {
		s.blobs.Add(1)
		s.bytes.Add(size)
	} else {
		s.bytes.Add(size - old.Size())
	}
	s.stampPath(d)
	return nil
}

// syncDir fsyncs a directory so that entries renamed into it are durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// errStopWalk ends a Walk early without an error.
var errStopWalk = errors.New("stop walk")

// Walk calls fn for every blob the store holds, in no particular order,
// until fn returns false. Blobs committed or deleted during the walk may or
// may not be seen.
func (s *Store) Walk(fn func(d digest.Digest, size int64) bool) error {
	for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
		err := filepath.WalkDir(filepath.Join(s.root, "blobs", string(alg)), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed while walking
				}
				return err
			}
			if !e.Type().IsRegular() {
				return nil
			}
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if validate(d) != nil {
				return nil // not a blob of ours
			}
			fi, err := e.Info()
			if err != nil {
				return nil // deleted since listed
			}
			if !fn(d, fi.Size()) {
				return errStopWalk
			}
			return nil
		})
		if errors.Is(err, errStopWalk) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("blobstore: walk: %w", err)
		}
	}
	return nil
}

// ModTime returns when blob d's file was last written (committed), or
// ErrNotFound. Garbage collection keeps files written after it began.
func (s *Store) ModTime(d digest.Digest) (time.Time, error) {
	if err := validate(d); err != nil {
		return time.Time{}, err
	}
	fi, err := os.Lstat(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return time.Time{}, fmt.Errorf("blobstore: stat %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("blobstore: stat %s: %w", d, err)
	}
	return fi.ModTime(), nil
}
