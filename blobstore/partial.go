package blobstore

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
)

// ErrPartialFailed is what readers of a Partial get once its writer gave up
// (the fetch failed or its bytes did not match the digest).
var ErrPartialFailed = errors.New("blob fetch failed")

// Partial is a blob of known digest and size being written by one writer (a
// fetch from a peer) while any number of readers read it (the client that
// asked for it, other peers fetching it from this node). A reader behind the
// writer waits for more bytes instead of failing, which is what lets nodes
// that fetch the same new blob at once feed each other.
//
// The last byte is released to readers only after Commit has verified the
// digest, so no reader ever sees a complete blob that is wrong: when the
// bytes turn out not to match, readers get ErrPartialFailed before the end.
// It is released before the file is made durable: the bytes are right, and
// the reader need not wait for this node's disk.
//
// Unlike Put and Upload, a Partial does not push its bytes to disk while it
// grows (no early writeback): the reader streaming the blob to a client is
// right behind the writer, and throttling the writer to the disk's speed
// would throttle the client too. Commit's fsync pays for it at the end.
type Partial struct {
	s    *Store
	d    digest.Digest
	size int64
	f    *os.File
	h    hash.Hash

	mu       sync.Mutex
	grown    *sync.Cond // broadcast when written or state changes
	written  int64
	verified bool  // all bytes arrived and match the digest
	done     bool  // committed or failed
	err      error // why it failed; nil once committed
	refs     int   // the writer until done, plus open readers; f closes at 0
}

// NewPartial starts writing blob d of the given size into a temp file.
func (s *Store) NewPartial(d digest.Digest, size int64) (*Partial, error) {
	if err := validate(d); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("blobstore: partial %s: negative size %d", d, size)
	}
	f, err := os.CreateTemp(s.uploads, "fetch-*")
	if err != nil {
		return nil, fmt.Errorf("blobstore: partial %s: %w", d, err)
	}
	p := &Partial{s: s, d: d, size: size, f: f, h: d.Algorithm().Hash(), refs: 1}
	p.grown = sync.NewCond(&p.mu)
	return p, nil
}

// Digest is the digest the bytes must match.
func (p *Partial) Digest() digest.Digest { return p.d }

// Size is the blob's full size.
func (p *Partial) Size() int64 { return p.size }

// Written is how many bytes the writer has stored so far.
func (p *Partial) Written() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written
}

// Write appends b. Writing past the announced size is an error: the sender
// is not sending this blob.
func (p *Partial) Write(b []byte) (int, error) {
	p.mu.Lock()
	off, done := p.written, p.done
	p.mu.Unlock()
	if done {
		return 0, fmt.Errorf("blobstore: partial %s: write after the fetch ended", p.d)
	}
	if off+int64(len(b)) > p.size {
		return 0, fmt.Errorf("blobstore: partial %s: %w: more than the %d bytes announced", p.d, ErrDigestMismatch, p.size)
	}
	n, err := p.f.WriteAt(b, off)
	p.h.Write(b[:n])
	p.mu.Lock()
	p.written += int64(n)
	p.grown.Broadcast()
	p.mu.Unlock()
	if err != nil {
		return n, fmt.Errorf("blobstore: partial %s: %w", p.d, err)
	}
	return n, nil
}

// Commit verifies that all size bytes arrived and match the digest, makes
// the file durable and moves it into place as the blob. If they do not
// match, the partial fails (see Fail) and Commit returns an error wrapping
// ErrDigestMismatch.
func (p *Partial) Commit() error {
	p.mu.Lock()
	written := p.written
	p.mu.Unlock()
	var err error
	switch got := digest.NewDigest(p.d.Algorithm(), p.h); {
	case written != p.size:
		err = fmt.Errorf("%w: %d of %d bytes arrived", ErrDigestMismatch, written, p.size)
	case got != p.d:
		err = fmt.Errorf("%w: expected %s, got %s", ErrDigestMismatch, p.d, got)
	default:
		p.mu.Lock()
		p.verified = true
		p.grown.Broadcast()
		p.mu.Unlock()
		err = p.f.Sync()
		if err == nil {
			err = p.s.commit(p.f.Name(), p.d, p.size)
		}
	}
	if err != nil {
		err = fmt.Errorf("blobstore: commit fetched %s: %w", p.d, err)
		p.Fail(err)
		return err
	}
	p.finish(nil)
	return nil
}

// Fail ends the write without a blob: the temp file is removed and readers
// get ErrPartialFailed (wrapping cause) instead of the bytes they wait for.
func (p *Partial) Fail(cause error) {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done {
		return
	}
	if err := os.Remove(p.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		p.s.logger.Warn("blobstore: remove failed fetch", "digest", p.d, "err", err)
	}
	p.finish(fmt.Errorf("%w: %w", ErrPartialFailed, cause))
}

func (p *Partial) finish(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done, p.err = true, err
	p.grown.Broadcast()
	p.release()
}

// release drops one reference; p.mu is held.
func (p *Partial) release() {
	p.refs--
	if p.refs == 0 {
		p.f.Close()
	}
}

// Err is nil while writing and after a commit, the failure otherwise.
func (p *Partial) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// NewReader returns a reader of the blob from its first byte. It can seek;
// reads past what has been written wait for the writer. The reader must be
// closed. It reports false when the partial has ended and its last reader
// is gone: then the committed blob is read from the store instead.
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
	// f is this reader's own descriptor of the file, opened by the first
	// SendTo (its own offset, for sendfile); noFile: it could not be.
	f      *os.File
	noFile bool
}

// ready waits until bytes past r.off may be read and returns where they
// end: everything written so far, except the last byte until the digest is
// verified. io.EOF at the end; the partial's error once it failed.
func (r *partialReader) ready() (int64, error) {
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
		avail := min(p.written, p.size-1)
		if p.verified {
			avail = p.size
		} else if p.err != nil {
			return 0, p.err
		}
		if r.off < avail {
			return avail, nil
		}
		p.grown.Wait()
	}
}

func (r *partialReader) Read(b []byte) (int, error) {
	avail, err := r.ready()
	if err != nil {
		return 0, err
	}
	n := min(int64(len(b)), avail-r.off)
	m, err := r.p.f.ReadAt(b[:n], r.off)
	r.off += int64(m)
	if err == io.EOF && m > 0 {
		err = nil
	}
	return m, err
}

// SendTo copies up to limit bytes from the reader's position to w,
// waiting for the writer as Read does, and returns how many it copied. It
// is the path to a client's response: when w is an io.ReaderFrom, each run
// of bytes already written is handed to it as a section of the file
// (*io.LimitedReader of *os.File), which net/http sends with sendfile, so
// the bytes are not read into this process and written out again. The
// last byte still waits for the digest check, and a failed fetch ends the
// copy with its error.
func (r *partialReader) SendTo(w io.Writer, limit int64) (int64, error) {
	rf, ok := w.(io.ReaderFrom)
	var f *os.File
	if ok {
		f = r.file()
	}
	if f == nil {
		return io.CopyBuffer(onlyWriter{w}, io.LimitReader(onlyReader{r}, limit), make([]byte, 1<<20))
	}
	var sent int64
	for sent < limit {
		avail, err := r.ready()
		if err == io.EOF {
			return sent, nil
		}
		if err != nil {
			return sent, err
		}
		n := min(avail-r.off, limit-sent)
		if _, err := f.Seek(r.off, io.SeekStart); err != nil {
			return sent, fmt.Errorf("blobstore: partial %s: %w", r.p.d, err)
		}
		m, err := rf.ReadFrom(&io.LimitedReader{R: f, N: n})
		r.off += m
		sent += m
		if err != nil {
			return sent, err
		}
		if m < n {
			return sent, fmt.Errorf("blobstore: partial %s: %w: the file ended at %d, %d bytes were written", r.p.d, io.ErrUnexpectedEOF, r.off, avail)
		}
	}
	return sent, nil
}

// file opens the reader's own descriptor of the partial's file, or returns
// nil when it cannot. The file is opened by name, which is the temp file's
// only until Commit moves it into place: the descriptor is kept only if it
// is the same file as the writer's.
func (r *partialReader) file() *os.File {
	if r.f != nil || r.noFile {
		return r.f
	}
	r.noFile = true
	f, err := os.Open(r.p.f.Name())
	if err != nil {
		return nil
	}
	mine, err1 := f.Stat()
	theirs, err2 := r.p.f.Stat() // open: this reader holds a reference
	if err1 != nil || err2 != nil || !os.SameFile(mine, theirs) {
		f.Close()
		return nil
	}
	r.f, r.noFile = f, false
	return f
}

// onlyReader and onlyWriter hide extras (WriterTo, ReaderFrom) so that a
// copy uses the buffer it is given.
type onlyReader struct{ io.Reader }

type onlyWriter struct{ io.Writer }

func (r *partialReader) Seek(offset int64, whence int) (int64, error) {
	off, err := seekOffset(r.off, r.p.size, offset, whence)
	if err != nil {
		return 0, err
	}
	r.off = off
	return off, nil
}

// seekOffset is where an io.Seeker of a blob of size bytes, now at cur,
// lands after Seek(offset, whence).
func seekOffset(cur, size, offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += cur
	case io.SeekEnd:
		offset += size
	default:
		return 0, fmt.Errorf("blobstore: seek: bad whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("blobstore: seek to negative offset %d", offset)
	}
	return offset, nil
}

func (r *partialReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.f != nil {
		r.f.Close()
	}
	r.p.mu.Lock()
	r.p.release()
	r.p.mu.Unlock()
	return nil
}
