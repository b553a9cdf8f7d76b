package blobstore

import (
	"bytes"
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// The product target is a 512 MiB push at >= ~700 MB/s; these measure the
// store's share of it (hash + write + fsync + rename), with the input in memory.

func BenchmarkPut(b *testing.B) {
	for _, size := range []int{64 << 20, 512 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			s := benchStore(b)
			data := randomBytes(size)
			d := digest.FromBytes(data)
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := s.Put(d, bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := s.Delete(d); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func BenchmarkUploadAppendCommit(b *testing.B) {
	const size, chunk = 64 << 20, 8 << 20
	s := benchStore(b)
	data := randomBytes(size)
	d := digest.FromBytes(data)
	b.SetBytes(size)
	for b.Loop() {
		u, err := s.NewUpload()
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < size; off += chunk {
			if _, err := u.Append(bytes.NewReader(data[off : off+chunk])); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := u.Commit(d); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := s.Delete(d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

func BenchmarkOpenRead(b *testing.B) {
	const size = 64 << 20
	s := benchStore(b)
	data := randomBytes(size)
	d := digest.FromBytes(data)
	if _, err := s.Put(d, bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, bufSize)
	b.SetBytes(size)
	for b.Loop() {
		f, _, err := s.Open(d)
		if err != nil {
			b.Fatal(err)
		}
		// Hide WriterTo/ReaderFrom so the copy really reads with buf.
		if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{f}, buf); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

func benchStore(b *testing.B) *Store {
	s, err := Open(b.TempDir(), nil) // no logs between benchmark results
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkOpenVerifiedRead measures the read path a GET or a peer uses:
// "verified" is a blob whose stamp matches (served as the *os.File, so
// net/http can use sendfile; here read through the same 32 KiB copy),
// "unverified" one hashed as it streams (after a restart, or when its file
// changed), in the 32 KiB reads net/http makes.
func BenchmarkOpenVerifiedRead(b *testing.B) {
	const size = 64 << 20
	for _, verified := range []bool{true, false} {
		name := "unverified"
		if verified {
			name = "verified"
		}
		b.Run(name, func(b *testing.B) {
			root := b.TempDir()
			s, err := Open(root, nil)
			if err != nil {
				b.Fatal(err)
			}
			data := randomBytes(size)
			d := digest.FromBytes(data)
			if _, err := s.Put(d, bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, 32<<10)
			b.SetBytes(size)
			for b.Loop() {
				if !verified {
					b.StopTimer()
					s.dropStamp(d)
					b.StartTimer()
				}
				r, _, err := s.OpenVerified(d)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{r}, buf); err != nil {
					b.Fatal(err)
				}
				r.Close()
			}
		})
	}
}

// BenchmarkPartial measures a fetch's share on the node: 64 MiB written in
// 1 MiB writes (or 64 KiB, a frame from a peer) while one reader sends it to a loopback
// TCP socket (the client the fetch is for; another goroutine drains it),
// then committed (hash check, fsync, rename). "copy" is the reader as
// net/http used it before SendTo (32 KiB reads and writes), "sendfile" is
// SendTo. cpu-s/GB is the process's CPU time (user+system) per GB.
func BenchmarkPartial(b *testing.B) {
	const size = 64 << 20
	for _, c := range []struct {
		mode  string
		chunk int
	}{{"copy", 1 << 20}, {"sendfile", 1 << 20}, {"copy", 64 << 10}, {"sendfile", 64 << 10}} {
		mode, chunk := c.mode, c.chunk
		b.Run(fmt.Sprintf("%s/writes=%dKiB", mode, chunk>>10), func(b *testing.B) {
			s := benchStore(b)
			data := randomBytes(size)
			d := digest.FromBytes(data)
			send, recv := tcpPair(b)
			go io.Copy(io.Discard, recv)
			b.SetBytes(size)
			cpu0 := cpuTime()
			for b.Loop() {
				p, err := s.NewPartial(d, size)
				if err != nil {
					b.Fatal(err)
				}
				r, _ := p.NewReader()
				done := make(chan error, 1)
				go func() {
					var err error
					if mode == "copy" {
						_, err = io.CopyBuffer(struct{ io.Writer }{send}, struct{ io.Reader }{r}, make([]byte, 32<<10))
					} else {
						_, err = r.(*partialReader).SendTo(send, size)
					}
					done <- err
				}()
				for off := 0; off < size; off += chunk {
					if _, err := p.Write(data[off : off+chunk]); err != nil {
						b.Fatal(err)
					}
				}
				if err := p.Commit(); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				r.Close()
				b.StopTimer()
				if err := s.Delete(d); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric((cpuTime()-cpu0).Seconds()/(float64(b.N)*size/1e9), "cpu-s/GB")
		})
	}
}

// cpuTime is the CPU time (user+system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
