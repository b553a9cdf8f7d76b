package testnet

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"

	"github.com/opencontainers/go-digest"
)

// streamBlock is the period of a Stream: one random block, stamped with its
// index so that no two blocks of a stream (or of two seeds) are equal.
const streamBlock = 1 << 20

// Stream is a deterministic, incompressible-looking byte stream of a fixed
// size, generated as it is read: gigabytes can be pushed without holding
// them in memory. Generating costs a memory copy per byte, so a client
// reading a Stream is not the bottleneck of a benchmark.
type Stream struct {
	seed  uint64
	size  int64
	off   int64
	block []byte
}

// NewStream returns the stream of size bytes for seed.
func NewStream(seed uint64, size int64) *Stream {
	block := make([]byte, streamBlock)
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	rand.NewChaCha8(key).Read(block)
	return &Stream{seed: seed, size: size, block: block}
}

// Size is the stream's total length.
func (s *Stream) Size() int64 { return s.size }

// Read implements io.Reader.
func (s *Stream) Read(p []byte) (int, error) {
	if s.off >= s.size {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && s.off < s.size {
		bi, bo := s.off/streamBlock, int(s.off%streamBlock)
		n := min(len(p), streamBlock-bo, int(min(int64(1<<30), s.size-s.off)))
		copy(p[:n], s.block[bo:bo+n])
		if bo < 16 { // stamp seed and block index over the block's first 16 bytes
			var hdr [16]byte
			binary.LittleEndian.PutUint64(hdr[:8], s.seed)
			binary.LittleEndian.PutUint64(hdr[8:], uint64(bi))
			copy(p[:min(n, 16-bo)], hdr[bo:])
		}
		p, total, s.off = p[n:], total+n, s.off+int64(n)
	}
	return total, nil
}

// StreamDigest is the sha256 digest of NewStream(seed, size), computed by
// reading the stream once.
func StreamDigest(seed uint64, size int64) digest.Digest {
	h := sha256.New()
	if _, err := io.CopyBuffer(h, NewStream(seed, size), make([]byte, 1<<20)); err != nil {
		panic(err) // a Stream never fails
	}
	return digest.NewDigest(digest.SHA256, h)
}

// RandomBytes returns n random bytes.
func RandomBytes(n int) []byte {
	b := make([]byte, n)
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], rand.Uint64())
	binary.LittleEndian.PutUint64(key[8:], rand.Uint64())
	rand.NewChaCha8(key).Read(b)
	return b
}

// WriteLayerTar writes an uncompressed layer tarball to path holding files
// regular files of the given size with random content under dir/, and
// returns the tarball's digest (the layer's diff ID).
func WriteLayerTar(path, dir string, files int, size int) (digest.Digest, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(f, h))
	mtime := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: mtime}); err != nil {
		return "", err
	}
	for i := range files {
		body := RandomBytes(size)
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("%s/file-%d.bin", dir, i), Mode: 0o644, Size: int64(len(body)), ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", err
		}
		if _, err := tw.Write(body); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return digest.NewDigest(digest.SHA256, h), nil
}
