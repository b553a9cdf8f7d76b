package blobstore

import (
	"bytes"
	"errors"
	"io"
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
