package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// StatBlob HEADs a blob and returns its descriptor (size from
// Content-Length), for callers that need the size before Blob.
func (r *Registry) StatBlob(ctx context.Context, repo string, d digest.Digest) (ocispec.Descriptor, error) {
	if err := r.checkRepoRef("stat-blob", repo, d.String(), true); err != nil {
		return ocispec.Descriptor{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.reqTimeout)
	defer cancel()
	req := &request{op: "stat-blob", method: http.MethodHead, repo: repo, ref: d.String(),
		path: pathFor(repo, "blobs", d.String()), ctx: ctx}
	resp, err := r.do(req)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	drain(resp)
	n, err := strconv.ParseInt(resp.Header.Get("Content-Length"), 10, 64)
	if err != nil || n < 0 {
		return ocispec.Descriptor{}, r.bad(req, "blob HEAD answered without a Content-Length")
	}
	return ocispec.Descriptor{MediaType: "application/octet-stream", Digest: d, Size: n}, nil
}

// Blob streams a blob's bytes from offset (a Range request when offset >
// 0). size is the blob's full size (-1 if unknown: then the first
// response's length is taken as the size). The reader resumes with a Range
// request from where the stream broke (a network error, an idle body, a
// short body), at most a few times in a row without progress, with
// backoff; it does not verify the digest (the caller does) but never
// returns more than size-offset bytes. The first request is made before
// Blob returns, so a missing blob or refused credentials are returned
// here. Close the reader to release the connection.
func (r *Registry) Blob(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error) {
	if err := r.checkRepoRef("blob", repo, d.String(), true); err != nil {
		return nil, err
	}
	if offset < 0 || (size >= 0 && offset > size) {
		return nil, r.newError(&request{op: "blob", repo: repo, ref: d.String()}, ErrInvalidRequest, 0,
			fmt.Sprintf("offset %d outside the blob (size %d)", offset, size), nil)
	}
	br := &blobReader{r: r, ctx: ctx, repo: repo, d: d, size: size, pos: offset}
	if size >= 0 && offset == size {
		return br, nil
	}
	if err := br.open(); err != nil {
		return nil, err
	}
	return br, nil
}

// blobReader is the resuming body. It is not safe for concurrent Reads.
type blobReader struct {
	r    *Registry
	ctx  context.Context
	repo string
	d    digest.Digest
	size int64 // -1 until known
	pos  int64 // absolute offset of the next byte

	body     io.ReadCloser
	cancel   context.CancelFunc
	idle     *time.Timer
	failures int // consecutive failed attempts without progress
	closed   bool
	err      error // sticky terminal error

	mu sync.Mutex // guards body/cancel against Close from another goroutine
}

func (b *blobReader) req(ctx context.Context) *request {
	h := http.Header{}
	if b.pos > 0 {
		h.Set("Range", "bytes="+strconv.FormatInt(b.pos, 10)+"-")
	}
	return &request{op: "blob", method: http.MethodGet, repo: b.repo, ref: b.d.String(),
		path: pathFor(b.repo, "blobs", b.d.String()), header: h, ctx: ctx}
}

// open starts a request at b.pos.
func (b *blobReader) open() error {
	ctx, cancel := context.WithCancel(b.ctx)
	req := b.req(ctx)
	// The idle timer also bounds the wait for response headers beyond the
	// transport's own bound.
	idle := time.AfterFunc(b.r.idle, cancel)
	resp, err := b.r.do(req)
	if err != nil {
		idle.Stop()
		cancel()
		return err
	}
	skip := int64(0)
	switch {
	case b.pos == 0 && resp.StatusCode == http.StatusOK:
		if b.size < 0 && resp.ContentLength >= 0 {
			b.size = resp.ContentLength
		}
		if resp.ContentLength >= 0 && resp.ContentLength != b.size {
			drain(resp)
			idle.Stop()
			cancel()
			return b.r.bad(req, fmt.Sprintf("upstream says the blob is %d bytes, not %d", resp.ContentLength, b.size))
		}
	case b.pos > 0 && resp.StatusCode == http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != b.pos || (b.size >= 0 && total >= 0 && total != b.size) {
			drain(resp)
			idle.Stop()
			cancel()
			return b.r.bad(req, fmt.Sprintf("range answer %q does not start at %d of %d bytes", clip(resp.Header.Get("Content-Range"), 80), b.pos, b.size))
		}
		if b.size < 0 && total >= 0 {
			b.size = total
		}
	case b.pos > 0 && resp.StatusCode == http.StatusOK:
		// The server ignored Range: skip what we already have.
		skip = b.pos
		if b.size < 0 && resp.ContentLength >= 0 {
			b.size = resp.ContentLength
		}
	case resp.StatusCode == http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != 0 {
			drain(resp)
			idle.Stop()
			cancel()
			return b.r.bad(req, "unasked-for range answer")
		}
		if b.size < 0 && total >= 0 {
			b.size = total
		}
	default:
		drain(resp)
		idle.Stop()
		cancel()
		return b.r.bad(req, fmt.Sprintf("unexpected status %d for a blob GET", resp.StatusCode))
	}
	body := resp.Body
	if skip > 0 {
		n, err := io.CopyN(io.Discard, body, skip)
		b.r.obs.OnBytes("blob", n) // fetched from upstream all the same
		if err != nil {
			body.Close()
			idle.Stop()
			cancel()
			e := b.r.newError(req, ErrUnavailable, resp.StatusCode, "upstream ignored the Range request and its stream broke before the resume point", err)
			b.r.recordError(e)
			return e
		}
	}
	b.mu.Lock()
	b.body, b.cancel, b.idle = body, cancel, idle
	closed := b.closed
	b.mu.Unlock()
	if closed {
		b.dropBody()
		return errReaderClosed
	}
	idle.Reset(b.r.idle)
	return nil
}

func (b *blobReader) dropBody() {
	b.mu.Lock()
	body, cancel, idle := b.body, b.cancel, b.idle
	b.body, b.cancel, b.idle = nil, nil, nil
	b.mu.Unlock()
	if idle != nil {
		idle.Stop()
	}
	if cancel != nil {
		cancel()
	}
	if body != nil {
		body.Close()
	}
}

func (b *blobReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.size >= 0 && b.pos >= b.size {
		return 0, io.EOF
	}
	for {
		b.mu.Lock()
		body, idle, closed := b.body, b.idle, b.closed
		b.mu.Unlock()
		if closed {
			b.err = errReaderClosed
			return 0, b.err
		}
		if body == nil {
			if err := b.resume(); err != nil {
				b.err = err
				return 0, err
			}
			if b.size >= 0 && b.pos >= b.size {
				return 0, io.EOF
			}
			continue
		}
		q := p
		if b.size >= 0 && int64(len(q)) > b.size-b.pos {
			q = q[:b.size-b.pos]
		}
		n, err := body.Read(q)
		if n > 0 {
			b.pos += int64(n)
			b.failures = 0
			idle.Reset(b.r.idle)
			b.r.obs.OnBytes("blob", int64(n))
		}
		switch {
		case err == nil:
			if n > 0 {
				return n, nil
			}
			continue
		case err == io.EOF && (b.size < 0 || b.pos >= b.size):
			b.dropBody()
			if n > 0 {
				return n, nil
			}
			return 0, io.EOF
		}
		// The stream broke (or ended short): resume on the next call.
		b.dropBody()
		if b.ctx.Err() != nil {
			b.err = b.ctx.Err()
			return n, b.err
		}
		b.r.log.Info("upstream blob stream broke; resuming with a Range request",
			"repo", b.repo, "digest", b.d, "at", b.pos, "size", b.size, "err", err)
		if n > 0 {
			return n, nil
		}
	}
}

var errReaderClosed = errors.New("upstream blob reader closed")

// resume reopens at b.pos after a backoff, giving up after maxResumes
// failures in a row without progress.
func (b *blobReader) resume() error {
	for {
		b.mu.Lock()
		closed := b.closed
		b.mu.Unlock()
		if closed {
			return errReaderClosed
		}
		b.failures++
		if b.failures > b.r.maxResumes {
			e := b.r.newError(&request{op: "blob", repo: b.repo, ref: b.d.String()}, ErrUnavailable, 0,
				fmt.Sprintf("blob stream broke %d times in a row at byte %d", b.r.maxResumes, b.pos), nil)
			b.r.recordError(e)
			return e
		}
		wait := b.r.retryWait << (b.failures - 1)
		t := time.NewTimer(wait)
		select {
		case <-b.ctx.Done():
			t.Stop()
			return b.ctx.Err()
		case <-t.C:
		}
		err := b.open()
		if err == nil {
			return nil
		}
		// Only transient failures are worth another try.
		if !errors.Is(err, ErrUnavailable) {
			return err
		}
	}
}

// Close releases the connection. It may be called from another goroutine
// to abort a Read in progress.
func (b *blobReader) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.dropBody()
	return nil
}

// parseContentRange reads "bytes START-END/TOTAL" (TOTAL may be "*": -1).
func parseContentRange(v string) (start, total int64, ok bool) {
	v, found := strings.CutPrefix(strings.TrimSpace(v), "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	s, e, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || t <= end {
			return 0, 0, false
		}
		total = t
	}
	return start, total, true
}
