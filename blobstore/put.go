package blobstore

import (
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
)

const (
	bufSize = 1 << 20 // large reads and writes: fewer syscalls, longer hash runs
	numBufs = 2       // double-buffered: one being hashed while the next is read and written

	// writebackEvery is how often copyHashed asks the kernel to start writing
	// out what it has so far, so disk writes overlap the upload and the fsync
	// at commit finds little left to do.
	writebackEvery = 8 << 20
)

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// Put stores the bytes of r as blob d and returns their size. The bytes are
// streamed to a temp file while hashed; if they do not match d, Put returns an
// error wrapping ErrDigestMismatch and keeps nothing. If d is already stored,
// r is still read and verified and Put succeeds, so concurrent pushes of one
// blob all succeed.
func (s *Store) Put(d digest.Digest, r io.Reader) (size int64, err error) {
	if err := validate(d); err != nil {
		return 0, err
	}
	if size, err = s.put(d, r); err != nil {
		return 0, fmt.Errorf("blobstore: put %s: %w", d, err)
	}
	return size, nil
}

func (s *Store) put(d digest.Digest, r io.Reader) (size int64, err error) {
	f, err := os.CreateTemp(s.uploads, "put-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := d.Algorithm().Hash()
	if size, err = copyHashed(f, 0, h, r); err != nil {
		return 0, err
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return 0, fmt.Errorf("%w: expected %s, got %s", ErrDigestMismatch, d, got)
	}
	if err = f.Sync(); err != nil {
		return 0, err
	}
	if err = f.Close(); err != nil {
		return 0, err
	}
	return size, s.commit(f.Name(), d, size)
}

// copyHashed writes r to f from offset off and feeds the same bytes to h,
// returning how many it wrote. On error some bytes may have been written and
// hashed; the caller discards or rolls back.
//
// Hashing runs on a second goroutine, over the buffers the caller's goroutine
// has just written, so the hash (CPU) overlaps reading and writing (copies
// into the page cache). The goroutine has exited when copyHashed returns.
func copyHashed(f *os.File, off int64, h hash.Hash, r io.Reader) (int64, error) {
	type chunk struct {
		buf *[bufSize]byte
		n   int
	}
	free := make(chan *[bufSize]byte, numBufs)
	full := make(chan chunk, numBufs)
	for range numBufs {
		free <- bufPool.Get().(*[bufSize]byte)
	}
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for c := range full {
			h.Write(c.buf[:c.n])
			free <- c.buf
		}
	}()

	var (
		n       int64
		err     error
		flushed int64 // bytes after off already handed to startWriteback
	)
	for {
		buf := <-free
		m, eof, rerr := fill(r, buf[:])
		if rerr != nil {
			free <- buf
			err = fmt.Errorf("read: %w", rerr)
			break
		}
		if m > 0 {
			if _, err = f.WriteAt(buf[:m], off+n); err != nil {
				free <- buf
				break
			}
			n += int64(m)
			full <- chunk{buf, m}
		} else {
			free <- buf
		}
		if eof {
			break
		}
		if n-flushed >= writebackEvery {
			startWriteback(f, off+flushed, n-flushed)
			flushed = n
		}
	}
	close(full)
	<-hashed
	for range numBufs {
		bufPool.Put(<-free)
	}
	return n, err
}

// fill reads from r until buf is full or r ends (eof). Unlike io.ReadFull it
// keeps a reader's own io.ErrUnexpectedEOF (a truncated HTTP body) an error
// instead of mistaking it for a short last read.
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}
