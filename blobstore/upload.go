package blobstore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

const idLen = 32 // hex characters of a 128-bit upload id

// ErrTooManyUploads is returned by NewUpload when the store, or the client
// starting the upload, already has as many open sessions as its limit
// (see SetUploadLimits).
var ErrTooManyUploads = errors.New("too many upload sessions")

// UploadLimits bound the open upload sessions of a store. Zero means no
// bound.
type UploadLimits struct {
	// PerStore bounds the sessions open in the whole store.
	PerStore int
	// PerOwner bounds the sessions one owner (a client: its address, or its
	// user once authenticated) has open.
	PerOwner int
}

// SetUploadLimits sets the bounds that NewUpload enforces from now on.
// Sessions already open stay open.
func (s *Store) SetUploadLimits(l UploadLimits) {
	s.uploadsMu.Lock()
	s.limits = l
	s.uploadsMu.Unlock()
}

// OpenUploads returns how many upload sessions are open.
func (s *Store) OpenUploads() int {
	s.uploadsMu.Lock()
	defer s.uploadsMu.Unlock()
	return len(s.sessions)
}

// Upload is a resumable, chunked upload: a temp file in root/uploads that
// grows by Append and becomes a blob at Commit. Sessions live in memory only;
// Open removes their files after a restart. Append, Commit and Cancel on one
// Upload are serialised; Size and ID never block.
//
// A session holds no file descriptor between calls: Append and Commit open
// the temp file and close it before they return, and the running hash
// stays in memory. An idle session costs a few hundred bytes of memory and
// one file on disk, so many clients that start uploads and go quiet cannot
// exhaust the process's descriptors.
type Upload struct {
	s     *Store
	id    string
	path  string
	owner string // who started it, for the per-owner limit ("" = no owner)

	size       atomic.Int64 // bytes accepted so far
	lastActive atomic.Int64 // unix nanoseconds of the last use, for ExpireUploads

	mu   sync.Mutex
	done bool      // committed or cancelled
	h    hash.Hash // running sha256 of the first size bytes
}

// NewUpload starts an upload session with a random 128-bit hex id and no
// owner: only the store's limit applies to it.
func (s *Store) NewUpload() (*Upload, error) { return s.NewUploadFor("") }

// NewUploadFor starts an upload session for owner (a client's identity;
// "" for none). It returns an error wrapping ErrTooManyUploads, and creates
// nothing, when the store or the owner is at its limit.
func (s *Store) NewUploadFor(owner string) (*Upload, error) {
	var raw [idLen / 2]byte
	rand.Read(raw[:]) // never fails: crypto/rand crashes the program instead
	id := hex.EncodeToString(raw[:])
	u := &Upload{s: s, id: id, path: filepath.Join(s.uploads, id), owner: owner, h: sha256.New()}
	u.touch()

	// Reserve the slot first, so that concurrent starts cannot all pass the
	// check; give it back if the file cannot be made.
	s.uploadsMu.Lock()
	if err := s.admit(owner); err != nil {
		s.uploadsMu.Unlock()
		return nil, err
	}
	s.sessions[id] = u
	if owner != "" {
		if s.owners == nil {
			s.owners = map[string]int{}
		}
		s.owners[owner]++
	}
	s.uploadsMu.Unlock()

	f, err := os.OpenFile(u.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		u.forget()
		return nil, fmt.Errorf("blobstore: new upload: %w", err)
	}
	if err := f.Close(); err != nil {
		u.forget()
		_ = os.Remove(u.path)
		return nil, fmt.Errorf("blobstore: new upload: %w", err)
	}
	return u, nil
}

// admit checks the limits for one more session of owner. s.uploadsMu is held.
func (s *Store) admit(owner string) error {
	if l := s.limits.PerStore; l > 0 && len(s.sessions) >= l {
		return fmt.Errorf("blobstore: new upload: %d sessions are open, the most this node allows: %w", len(s.sessions), ErrTooManyUploads)
	}
	if l := s.limits.PerOwner; l > 0 && owner != "" && s.owners[owner] >= l {
		return fmt.Errorf("blobstore: new upload: %s has %d sessions open, the most one client may: %w", owner, s.owners[owner], ErrTooManyUploads)
	}
	return nil
}

// Upload returns the session with this id, or ErrUploadNotFound. The id comes
// from a URL, so anything but 32 lowercase hex characters is not found.
func (s *Store) Upload(id string) (*Upload, error) {
	if !validID(id) {
		return nil, fmt.Errorf("blobstore: upload %.40q: %w", id, ErrUploadNotFound)
	}
	s.uploadsMu.Lock()
	u := s.sessions[id]
	s.uploadsMu.Unlock()
	if u == nil {
		return nil, fmt.Errorf("blobstore: upload %s: %w", id, ErrUploadNotFound)
	}
	u.touch()
	return u, nil
}

func validID(id string) bool {
	if len(id) != idLen {
		return false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ExpireUploads cancels the sessions not used for longer than idle and returns
// how many it cancelled. A session busy in Append or Commit is never idle.
// The owner of the store calls it periodically.
func (s *Store) ExpireUploads(idle time.Duration) (removed int) {
	cutoff := time.Now().Add(-idle).UnixNano()
	s.uploadsMu.Lock()
	var stale []*Upload
	for _, u := range s.sessions {
		if u.lastActive.Load() < cutoff {
			stale = append(stale, u)
		}
	}
	s.uploadsMu.Unlock()

	for _, u := range stale {
		if !u.mu.TryLock() {
			continue // mid-Append or mid-Commit: in use
		}
		if !u.done && u.lastActive.Load() < cutoff {
			if err := u.discard(); err != nil {
				s.logger.Warn("blobstore: expire upload", "id", u.id, "err", err)
			}
			removed++
		}
		u.mu.Unlock()
	}
	return removed
}

// ID returns the session id: 32 lowercase hex characters.
func (u *Upload) ID() string { return u.id }

// Size returns how many bytes the session holds. During an Append it is the
// size before that Append.
func (u *Upload) Size() int64 { return u.size.Load() }

func (u *Upload) touch() { u.lastActive.Store(time.Now().UnixNano()) }

func (u *Upload) gone(op string) error {
	return fmt.Errorf("blobstore: %s upload %s: %w", op, u.id, ErrUploadNotFound)
}

// Append adds the bytes of r to the end of the upload and returns how many.
// If r or the disk fails midway (a client aborting a PATCH), Append returns
// the error with the session as it was before the call: the written tail is
// truncated and the hash state restored.
func (u *Upload) Append(r io.Reader) (n int64, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return 0, u.gone("append to")
	}
	u.touch()
	defer u.touch()

	f, err := os.OpenFile(u.path, os.O_WRONLY, 0)
	if err != nil {
		return 0, fmt.Errorf("blobstore: append to upload %s: %w", u.id, err)
	}
	defer f.Close() // written with WriteAt; Commit syncs

	size := u.size.Load()
	state, err := u.h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return 0, fmt.Errorf("blobstore: append to upload %s: save hash: %w", u.id, err)
	}
	n, err = copyHashed(f, size, u.h, r)
	if err != nil {
		if rerr := u.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore hash: %w", rerr))
		}
		// If the truncate fails too, the tail beyond size is harmless: the next
		// Append overwrites it and Commit truncates to size.
		if terr := f.Truncate(size); terr != nil {
			err = errors.Join(err, terr)
		}
		return 0, fmt.Errorf("blobstore: append to upload %s: %w", u.id, err)
	}
	u.size.Store(size + n)
	return n, nil
}

// Commit verifies the upload against d and stores it as that blob, ending the
// session, and returns its size. On a mismatch it returns an error wrapping
// ErrDigestMismatch and the session stays open, unchanged.
func (u *Upload) Commit(d digest.Digest) (size int64, err error) {
	if err := validate(d); err != nil {
		return 0, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return 0, u.gone("commit")
	}
	u.touch()
	size = u.size.Load()
	if err := u.commit(d, size); err != nil {
		return 0, fmt.Errorf("blobstore: commit upload %s: %w", u.id, err)
	}
	u.done = true
	u.forget()
	return size, nil
}

func (u *Upload) commit(d digest.Digest, size int64) error {
	f, err := os.OpenFile(u.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	got, err := u.digest(f, d.Algorithm(), size)
	if err == nil && got != d {
		err = fmt.Errorf("%w: expected %s, got %s", ErrDigestMismatch, d, got)
	}
	// Truncate drops a tail that a failed rollback may have left; normally a no-op.
	if err == nil {
		err = f.Truncate(size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return u.s.commit(u.path, d, size)
}

// digest returns the digest of the upload's first size bytes: from the running
// hash for sha256, else by reading the file f again.
func (u *Upload) digest(f *os.File, alg digest.Algorithm, size int64) (digest.Digest, error) {
	if alg == digest.SHA256 {
		return digest.NewDigest(alg, u.h), nil
	}
	h := alg.Hash()
	buf := bufPool.Get().(*[bufSize]byte)
	defer bufPool.Put(buf)
	if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, size), buf[:]); err != nil {
		return "", fmt.Errorf("rehash: %w", err)
	}
	return digest.NewDigest(alg, h), nil
}

// Cancel ends the session and removes its file.
func (u *Upload) Cancel() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return u.gone("cancel")
	}
	if err := u.discard(); err != nil {
		return fmt.Errorf("blobstore: cancel upload %s: %w", u.id, err)
	}
	return nil
}

// discard removes the file and forgets the session. u.mu is held.
func (u *Upload) discard() error {
	u.done = true
	u.forget()
	return os.Remove(u.path)
}

// forget drops the session from the store and gives its owner's slot back.
func (u *Upload) forget() {
	u.s.uploadsMu.Lock()
	defer u.s.uploadsMu.Unlock()
	if u.s.sessions[u.id] != u {
		return
	}
	delete(u.s.sessions, u.id)
	if u.owner != "" {
		if u.s.owners[u.owner]--; u.s.owners[u.owner] <= 0 {
			delete(u.s.owners, u.owner)
		}
	}
}
