package nodefake

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "crypto/sha256" // registers digest.SHA256
	_ "crypto/sha512" // registers digest.SHA512
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
)

// Blobs is a blob store in memory (node.BlobStore, once adapted as
// *blobstore.Store is: its NewPartial and uploads return concrete types
// like the real store's), FOR TESTS ONLY: nothing survives the process and
// every blob is held in memory whole.
//
// It keeps the promises of the store on disk that node relies on: commits
// are digest-verified and never partial; errors wrap the blobstore
// sentinels; partial copies hold their last byte back until verified;
// upload sessions have limits and expire. Verification is modelled by a
// flag per blob instead of file stamps, and two hooks damage a blob:
// Corrupt (a write through the filesystem: the copy is no longer verified)
// and Rot (decay below it: only a forced Verify finds it).
type Blobs struct {
	mu          sync.Mutex
	blobs       map[digest.Digest]*blob
	sessions    map[string]*Upload
	owners      map[string]int // open sessions per owner
	limits      blobstore.UploadLimits
	onCorrupt   func(d digest.Digest, size int64, cause error)
	quarantined int64
}

// blob is one stored copy. data is never changed in place (the hooks
// replace it), so a reader keeps the bytes it opened.
type blob struct {
	data     []byte
	verified bool // hashed and matched, and not written since
}

// verifyChunk is how many bytes Verify hashes per throttle call.
const verifyChunk = 1 << 20

// NewBlobs returns an empty store.
func NewBlobs() *Blobs {
	return &Blobs{blobs: map[digest.Digest]*blob{}, sessions: map[string]*Upload{}, owners: map[string]int{}}
}

// validate admits what the store on disk admits: well-formed sha256 and
// sha512 digests.
func validate(d digest.Digest) error {
	err := d.Validate()
	if errors.Is(err, digest.ErrDigestUnsupported) ||
		err == nil && d.Algorithm() != digest.SHA256 && d.Algorithm() != digest.SHA512 {
		return fmt.Errorf("nodefake: digest %.80q: %w", d, blobstore.ErrUnsupportedAlgorithm)
	}
	if err != nil {
		return fmt.Errorf("nodefake: digest %.80q: %w", d, err)
	}
	return nil
}

// commit stores data as d. A verified copy stays; any other is replaced,
// as a push heals a copy on disk that rotted.
func (s *Blobs) commit(d digest.Digest, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.blobs[d]; b != nil && b.verified {
		return
	}
	s.blobs[d] = &blob{data: data, verified: true}
}

// Put stores the bytes of r as blob d if they match it.
func (s *Blobs) Put(d digest.Digest, r io.Reader) (int64, error) {
	if err := validate(d); err != nil {
		return 0, err
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return 0, fmt.Errorf("nodefake: put %s: read: %w", d, err)
	}
	if got := d.Algorithm().FromBytes(data); got != d {
		return 0, fmt.Errorf("nodefake: put %s: %w: got %s", d, blobstore.ErrDigestMismatch, got)
	}
	s.commit(d, data)
	return int64(len(data)), nil
}

// Stats returns how many blobs are held and their total size.
func (s *Blobs) Stats() (blobs, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.blobs {
		blobs++
		bytes += int64(len(b.data))
	}
	return blobs, bytes
}

// Walk calls fn for every blob held (as of the call) until it returns false.
func (s *Blobs) Walk(fn func(d digest.Digest, size int64) bool) error {
	s.mu.Lock()
	sizes := make(map[digest.Digest]int64, len(s.blobs))
	for d, b := range s.blobs {
		sizes[d] = int64(len(b.data))
	}
	s.mu.Unlock()
	for d, size := range sizes {
		if !fn(d, size) {
			return nil
		}
	}
	return nil
}

// Held reports whether d is here and was not written since it was
// verified (a rotten copy still counts, as on disk).
func (s *Blobs) Held(d digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[d]
	return b != nil && b.verified
}

func (s *Blobs) get(op string, d digest.Digest) (*blob, error) {
	if err := validate(d); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[d]
	if b == nil {
		return nil, fmt.Errorf("nodefake: %s %s: %w", op, d, blobstore.ErrNotFound)
	}
	return b, nil
}

// Verify re-hashes d unless it is verified (or always, with force),
// calling throttle before each chunk; a copy that does not match is
// quarantined and reported.
func (s *Blobs) Verify(ctx context.Context, d digest.Digest, force bool, throttle func(n int) error) error {
	b, err := s.get("verify", d)
	if err != nil {
		return err
	}
	s.mu.Lock()
	verified := b.verified
	s.mu.Unlock()
	if verified && !force {
		return nil
	}
	for off := 0; off < len(b.data); off += verifyChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		if throttle != nil {
			if err := throttle(min(verifyChunk, len(b.data)-off)); err != nil {
				return err
			}
		}
	}
	return s.check(d, b)
}

// check hashes b, the copy of d: a match marks it verified, a mismatch
// quarantines it and returns an error wrapping blobstore.ErrCorrupt.
func (s *Blobs) check(d digest.Digest, b *blob) error {
	if got := d.Algorithm().FromBytes(b.data); got != d {
		cause := fmt.Errorf("nodefake: verify %s: %w: the %d bytes held hash to %s", d, blobstore.ErrCorrupt, len(b.data), got)
		s.quarantine(d, b, cause)
		return cause
	}
	s.mu.Lock()
	if s.blobs[d] == b {
		b.verified = true
	}
	s.mu.Unlock()
	return nil
}

// quarantine drops b, the corrupt copy of d, unless another copy replaced
// it already, and reports it once.
func (s *Blobs) quarantine(d digest.Digest, b *blob, cause error) {
	s.mu.Lock()
	if s.blobs[d] != b {
		s.mu.Unlock()
		return
	}
	delete(s.blobs, d)
	s.quarantined++
	fn := s.onCorrupt
	s.mu.Unlock()
	if fn != nil {
		fn(d, int64(len(b.data)), cause)
	}
}

// OpenVerified opens d. A verified copy is read as it is; any other is
// hashed whole at the first Read, which fails with blobstore.ErrCorrupt
// (and quarantines the copy) when it does not match: no byte of it is
// returned. The blob on disk returns the first bytes of a sequential read
// before it knows; a reader must not tell the difference but by that.
func (s *Blobs) OpenVerified(d digest.Digest) (io.ReadSeekCloser, int64, error) {
	b, err := s.get("open", d)
	if err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	verified := b.verified
	s.mu.Unlock()
	r := &blobReader{Reader: bytes.NewReader(b.data)}
	if !verified {
		r.check = func() error { return s.check(d, b) }
	}
	return r, int64(len(b.data)), nil
}

type blobReader struct {
	*bytes.Reader
	check  func() error // nil once checked (or verified at open)
	err    error        // sticky: corrupt
	closed bool
}

func (r *blobReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, os.ErrClosed
	}
	if r.check != nil {
		r.err, r.check = r.check(), nil
	}
	if r.err != nil {
		return 0, r.err
	}
	return r.Reader.Read(p)
}

func (r *blobReader) Close() error { r.closed = true; return nil }

// Quarantined is how many corrupt copies were dropped.
func (s *Blobs) Quarantined() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.quarantined
}

// OnCorrupt sets the function told of each corrupt copy found.
func (s *Blobs) OnCorrupt(fn func(d digest.Digest, size int64, cause error)) {
	s.mu.Lock()
	s.onCorrupt = fn
	s.mu.Unlock()
}

// Corrupt flips a bit of the copy of d, as a stray write to the file
// would: the copy is no longer verified, so Held says no and the next
// Verify or OpenVerified finds it. It reports whether d was held.
func (s *Blobs) Corrupt(d digest.Digest) bool { return s.damage(d, false) }

// Rot flips a bit of the copy of d below what the store can see (media
// decay): Held still says yes and only a forced Verify (the scrub) finds
// it. It reports whether d was held.
func (s *Blobs) Rot(d digest.Digest) bool { return s.damage(d, true) }

func (s *Blobs) damage(d digest.Digest, unseen bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.blobs[d]
	if b == nil {
		return false
	}
	data := bytes.Clone(b.data)
	if len(data) == 0 {
		data = []byte{0} // an empty blob can only be damaged by growing
	} else {
		data[0] ^= 1
	}
	s.blobs[d] = &blob{data: data, verified: unseen && b.verified}
	return true
}

// Partial is a blob being written by one writer while readers follow it
// (fetch.Partial); see blobstore.Partial for the contract it copies.
type Partial struct {
	s    *Blobs
	d    digest.Digest
	size int64

	mu       sync.Mutex
	grown    *sync.Cond // broadcast when written or the state changes
	buf      []byte
	verified bool  // all bytes arrived and match
	done     bool  // committed or failed
	err      error // why it failed
	refs     int   // the writer until done, plus open readers
}

// NewPartial starts a partial copy of d, of size bytes.
func (s *Blobs) NewPartial(d digest.Digest, size int64) (*Partial, error) {
	if err := validate(d); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("nodefake: partial %s: negative size %d", d, size)
	}
	p := &Partial{s: s, d: d, size: size, refs: 1}
	p.grown = sync.NewCond(&p.mu)
	return p, nil
}

// Written is how many bytes arrived so far.
func (p *Partial) Written() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return int64(len(p.buf))
}

// Write appends b; past the announced size it fails with an error
// wrapping blobstore.ErrDigestMismatch.
func (p *Partial) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return 0, fmt.Errorf("nodefake: partial %s: write after the fetch ended", p.d)
	}
	if int64(len(p.buf)+len(b)) > p.size {
		return 0, fmt.Errorf("nodefake: partial %s: %w: more than the %d bytes announced", p.d, blobstore.ErrDigestMismatch, p.size)
	}
	p.buf = append(p.buf, b...)
	p.grown.Broadcast()
	return len(b), nil
}

// Commit stores the blob if every byte arrived and matches; otherwise the
// partial fails and the error wraps blobstore.ErrDigestMismatch.
func (p *Partial) Commit() error {
	p.mu.Lock()
	data := p.buf
	p.mu.Unlock()
	var err error
	switch got := p.d.Algorithm().FromBytes(data); {
	case int64(len(data)) != p.size:
		err = fmt.Errorf("%w: %d of %d bytes arrived", blobstore.ErrDigestMismatch, len(data), p.size)
	case got != p.d:
		err = fmt.Errorf("%w: expected %s, got %s", blobstore.ErrDigestMismatch, p.d, got)
	}
	if err != nil {
		err = fmt.Errorf("nodefake: commit fetched %s: %w", p.d, err)
		p.Fail(err)
		return err
	}
	p.mu.Lock()
	p.verified = true
	p.grown.Broadcast()
	p.mu.Unlock()
	p.s.commit(p.d, bytes.Clone(data))
	p.finish(nil)
	return nil
}

// Fail ends the write without a blob: readers get blobstore.ErrPartialFailed.
func (p *Partial) Fail(cause error) {
	p.finish(fmt.Errorf("%w: %w", blobstore.ErrPartialFailed, cause))
}

func (p *Partial) finish(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done, p.err = true, err
	p.grown.Broadcast()
	p.refs--
}

// NewReader returns a reader from the first byte that waits for the
// writer; false once the partial ended and its last reader is gone.
func (p *Partial) NewReader() (io.ReadSeekCloser, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refs == 0 {
		return nil, false
	}
	p.refs++
	return &partialReader{p: p}, true
}

type partialReader struct {
	p      *Partial
	off    int64
	closed bool
}

func (r *partialReader) Read(b []byte) (int, error) {
	p := r.p
	if r.closed {
		return 0, os.ErrClosed
	}
	if r.off >= p.size {
		return 0, io.EOF
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		// Hold the last byte back until the digest is verified.
		avail := min(int64(len(p.buf)), p.size-1)
		if p.verified {
			avail = p.size
		} else if p.err != nil {
			return 0, p.err
		}
		if r.off < avail {
			n := copy(b, p.buf[r.off:avail])
			r.off += int64(n)
			return n, nil
		}
		p.grown.Wait()
	}
}

func (r *partialReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.p.size
	default:
		return 0, fmt.Errorf("nodefake: seek: bad whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("nodefake: seek to negative offset %d", offset)
	}
	r.off = offset
	return offset, nil
}

func (r *partialReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.p.mu.Lock()
	r.p.refs--
	r.p.mu.Unlock()
	return nil
}

// Upload is a client upload session in memory (node.Upload).
type Upload struct {
	s          *Blobs
	id, owner  string
	size       atomic.Int64
	lastActive atomic.Int64 // unix nanoseconds, for ExpireUploads

	mu   sync.Mutex // serialises Append, Commit, Cancel
	done bool
	data []byte
}

// SetUploadLimits bounds the sessions NewUploadFor opens from now on.
func (s *Blobs) SetUploadLimits(l blobstore.UploadLimits) {
	s.mu.Lock()
	s.limits = l
	s.mu.Unlock()
}

// OpenUploads is how many sessions are open.
func (s *Blobs) OpenUploads() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// NewUploadFor starts a session for owner ("": none), or fails with
// blobstore.ErrTooManyUploads at a limit.
func (s *Blobs) NewUploadFor(owner string) (*Upload, error) {
	var raw [16]byte
	rand.Read(raw[:])
	u := &Upload{s: s, id: hex.EncodeToString(raw[:]), owner: owner}
	u.touch()
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.limits.PerStore; l > 0 && len(s.sessions) >= l {
		return nil, fmt.Errorf("nodefake: new upload: %d sessions open: %w", len(s.sessions), blobstore.ErrTooManyUploads)
	}
	if l := s.limits.PerOwner; l > 0 && owner != "" && s.owners[owner] >= l {
		return nil, fmt.Errorf("nodefake: new upload: %s has %d sessions open: %w", owner, s.owners[owner], blobstore.ErrTooManyUploads)
	}
	s.sessions[u.id] = u
	if owner != "" {
		s.owners[owner]++
	}
	return u, nil
}

// Upload returns the open session id, or blobstore.ErrUploadNotFound.
func (s *Blobs) Upload(id string) (*Upload, error) {
	s.mu.Lock()
	u := s.sessions[id]
	s.mu.Unlock()
	if u == nil {
		return nil, fmt.Errorf("nodefake: upload %.40q: %w", id, blobstore.ErrUploadNotFound)
	}
	u.touch()
	return u, nil
}

// ExpireUploads cancels the sessions idle for longer than idle; one in
// the middle of a call is not idle.
func (s *Blobs) ExpireUploads(idle time.Duration) (removed int) {
	cutoff := time.Now().Add(-idle).UnixNano()
	s.mu.Lock()
	var stale []*Upload
	for _, u := range s.sessions {
		if u.lastActive.Load() < cutoff {
			stale = append(stale, u)
		}
	}
	s.mu.Unlock()
	for _, u := range stale {
		if !u.mu.TryLock() {
			continue // in use
		}
		if !u.done && u.lastActive.Load() < cutoff {
			u.end()
			removed++
		}
		u.mu.Unlock()
	}
	return removed
}

func (u *Upload) touch() { u.lastActive.Store(time.Now().UnixNano()) }

// end forgets the session and gives its owner's slot back; u.mu is held.
func (u *Upload) end() {
	u.done, u.data = true, nil
	s := u.s
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sessions, u.id)
	if u.owner != "" {
		if s.owners[u.owner]--; s.owners[u.owner] <= 0 {
			delete(s.owners, u.owner)
		}
	}
}

func (u *Upload) gone(op string) error {
	return fmt.Errorf("nodefake: %s upload %s: %w", op, u.id, blobstore.ErrUploadNotFound)
}

// ID is the session id: 32 lowercase hex characters.
func (u *Upload) ID() string { return u.id }

// Size is how many bytes the session holds.
func (u *Upload) Size() int64 { return u.size.Load() }

// Append adds r's bytes; if r fails, the session is left as it was.
func (u *Upload) Append(r io.Reader) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return 0, u.gone("append to")
	}
	u.touch()
	defer u.touch()
	b, err := io.ReadAll(r)
	if err != nil {
		return 0, fmt.Errorf("nodefake: append to upload %s: read: %w", u.id, err)
	}
	u.data = append(u.data, b...)
	u.size.Store(int64(len(u.data)))
	return int64(len(b)), nil
}

// Commit stores the bytes as blob d and ends the session; on a mismatch
// the session stays open, unchanged.
func (u *Upload) Commit(d digest.Digest) (int64, error) {
	if err := validate(d); err != nil {
		return 0, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return 0, u.gone("commit")
	}
	u.touch()
	if got := d.Algorithm().FromBytes(u.data); got != d {
		return 0, fmt.Errorf("nodefake: commit upload %s: %w: expected %s, got %s", u.id, blobstore.ErrDigestMismatch, d, got)
	}
	size := int64(len(u.data))
	u.s.commit(d, u.data)
	u.end()
	return size, nil
}

// Cancel ends the session and drops its bytes.
func (u *Upload) Cancel() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.done {
		return u.gone("cancel")
	}
	u.end()
	return nil
}
