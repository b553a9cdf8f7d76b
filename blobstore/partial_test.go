package blobstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestPartialReaderFollowsTheWriterAndGetsTheLastByteAfterCommit(t *testing.T) {
	s := newStore(t, t.TempDir())
	data := randomBytes(3<<20 + 17)
	d := digest.FromBytes(data)
	p, err := s.NewPartial(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := p.NewReader()
	got := make(chan []byte)
	go func() {
		b, err := io.ReadAll(r)
		if err != nil {
			t.Errorf("reader: %v", err)
		}
		r.Close()
		got <- b
	}()
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := p.Write(data[off:min(off+1<<20, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case b := <-got:
		t.Fatalf("the reader finished (%d bytes) before the digest was verified", len(b))
	case <-time.After(100 * time.Millisecond):
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("reader got %d bytes that differ from the %d written", len(b), len(data))
	}
	if size, err := s.Stat(d); err != nil || size != int64(len(data)) {
		t.Fatalf("after commit Stat = %d, %v", size, err)
	}
	assertStats(t, s, 1, int64(len(data)))
}

func TestPartialWithWrongBytesFailsItsReadersAndLeavesNothing(t *testing.T) {
	s := newStore(t, t.TempDir())
	want := randomBytes(1 << 20)
	wrong := bytes.Clone(want)
	wrong[len(wrong)/2] ^= 1
	d := digest.FromBytes(want)
	p, err := s.NewPartial(d, int64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := p.NewReader()
	defer r.Close()
	if _, err := p.Write(wrong); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Commit of wrong bytes = %v, want ErrDigestMismatch", err)
	}
	b, err := io.ReadAll(r)
	if !errors.Is(err, ErrPartialFailed) {
		t.Fatalf("reader of wrong bytes: %d bytes, err %v; want ErrPartialFailed", len(b), err)
	}
	if len(b) >= len(want) {
		t.Fatalf("reader received all %d bytes of a wrong blob", len(b))
	}
	if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat after a failed fetch = %v, want ErrNotFound", err)
	}
	if entries, _ := os.ReadDir(s.uploads); len(entries) != 0 {
		t.Fatalf("a failed fetch left %d temp files", len(entries))
	}
}

func TestPartialRefusesMoreBytesThanAnnounced(t *testing.T) {
	s := newStore(t, t.TempDir())
	data := randomBytes(100)
	p, err := s.NewPartial(digest.FromBytes(data[:50]), 50)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(data); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("writing 100 bytes into a 50-byte partial = %v", err)
	}
	p.Fail(errors.New("sender sent too much"))
	if err := p.Err(); !errors.Is(err, ErrPartialFailed) {
		t.Fatalf("Err after Fail = %v", err)
	}
}

func TestPartialReaderSeeksAndWaitsForLaterBytes(t *testing.T) {
	s := newStore(t, t.TempDir())
	data := randomBytes(2 << 20)
	p, err := s.NewPartial(digest.FromBytes(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := p.NewReader()
	defer r.Close()
	if _, err := r.Seek(1<<20+5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte)
	go func() {
		b := make([]byte, 10)
		_, err := io.ReadFull(r, b)
		if err != nil {
			t.Errorf("read: %v", err)
		}
		got <- b
	}()
	p.Write(data[:1<<20])
	select {
	case <-got:
		t.Fatal("read past the written part did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	p.Write(data[1<<20:])
	if b := <-got; !bytes.Equal(b, data[1<<20+5:1<<20+15]) {
		t.Fatalf("read at offset got %x", b)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestWalkListsEveryBlob(t *testing.T) {
	s := newStore(t, t.TempDir())
	want := map[digest.Digest]int64{}
	for i := range 5 {
		b := randomBytes(100 + i)
		d := digest.FromBytes(b)
		if _, err := s.Put(d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		want[d] = int64(len(b))
	}
	got := map[digest.Digest]int64{}
	if err := s.Walk(func(d digest.Digest, size int64) bool { got[d] = size; return true }); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("Walk saw %d blobs, want %d", len(got), len(want))
	}
	for d, size := range want {
		if got[d] != size {
			t.Errorf("Walk: %s has size %d, want %d", d, got[d], size)
		}
	}
}

// sectionRecorder forwards ReadFrom to a TCP connection and notes whether
// every source was a section of a file (what net uses sendfile for).
type sectionRecorder struct {
	*net.TCPConn
	calls, fileSections int
}

func (s *sectionRecorder) ReadFrom(r io.Reader) (int64, error) {
	s.calls++
	if lr, ok := r.(*io.LimitedReader); ok {
		if _, ok := lr.R.(*os.File); ok {
			s.fileSections++
		}
	}
	return s.TCPConn.ReadFrom(r)
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (send, recv *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, err := ln.AcceptTCP()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	send, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	recv = <-accepted
	t.Cleanup(func() { send.Close(); recv.Close() })
	return send, recv
}

func TestPartialSendToASocketFollowsTheWriterWithFileSectionsAndWaitsForCommit(t *testing.T) {
	s := newStore(t, t.TempDir())
	data := randomBytes(5<<20 + 3)
	d := digest.FromBytes(data)
	p, err := s.NewPartial(d, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := p.NewReader()
	defer r.Close()
	send, recv := tcpPair(t)
	rec := &sectionRecorder{TCPConn: send}
	sent := make(chan error, 1)
	go func() {
		n, err := r.(*partialReader).SendTo(rec, int64(len(data)))
		if err == nil && n != int64(len(data)) {
			err = fmt.Errorf("sent %d of %d bytes", n, len(data))
		}
		send.CloseWrite()
		sent <- err
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(recv)
		got <- b
	}()
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := p.Write(data[off:min(off+1<<20, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-sent:
		t.Fatalf("SendTo finished (%v) before the digest was verified", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatalf("SendTo: %v", err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the socket received %d bytes that differ from the %d written", len(b), len(data))
	}
	if rec.calls == 0 || rec.fileSections != rec.calls {
		t.Fatalf("%d of %d ReadFrom calls got a file section; want all (sendfile)", rec.fileSections, rec.calls)
	}
}

func TestPartialSendToEndsWithTheFetchErrorAndNeverSendsAWrongBlobWhole(t *testing.T) {
	s := newStore(t, t.TempDir())
	want := randomBytes(2 << 20)
	wrong := bytes.Clone(want)
	wrong[len(wrong)-2] ^= 1
	p, err := s.NewPartial(digest.FromBytes(want), int64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := p.NewReader()
	defer r.Close()
	send, recv := tcpPair(t)
	sent := make(chan error, 1)
	go func() {
		_, err := r.(*partialReader).SendTo(send, int64(len(want)))
		send.CloseWrite()
		sent <- err
	}()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(recv)
		got <- b
	}()
	if _, err := p.Write(wrong); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Commit of wrong bytes = %v, want ErrDigestMismatch", err)
	}
	if err := <-sent; !errors.Is(err, ErrPartialFailed) {
		t.Fatalf("SendTo of a failed fetch = %v, want ErrPartialFailed", err)
	}
	if b := <-got; len(b) >= len(want) {
		t.Fatalf("the socket received all %d bytes of a wrong blob", len(b))
	}
}

func TestPartialSendToAfterCommitMovedTheFileStillSendsItAll(t *testing.T) {
	s := newStore(t, t.TempDir())
	data := randomBytes(1<<20 + 5)
	p, err := s.NewPartial(digest.FromBytes(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := p.NewReader()
	defer r.Close()
	if _, err := p.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); err != nil { // renames the temp file away
		t.Fatal(err)
	}
	var b bytes.Buffer // a ReaderFrom, but not of files: the fallback copy
	if n, err := r.(*partialReader).SendTo(&b, 1<<40); err != nil || n != int64(len(data)) {
		t.Fatalf("SendTo after commit = %d, %v; want %d, nil", n, err, len(data))
	}
	if !bytes.Equal(b.Bytes(), data) {
		t.Fatal("SendTo after commit sent other bytes")
	}
}
