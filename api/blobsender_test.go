package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/opencontainers/go-digest"
)

// senderFake is a Registry (test only) whose one blob is content that
// sends itself (a BlobSender, as a blob still being fetched is).
type senderFake struct {
	Registry // nil: other methods are not called
	data     []byte
	sends    []int64 // the limit of each SendTo
}

func (f *senderFake) HasBlob(string, digest.Digest) bool { return true }
func (f *senderFake) StatBlob(context.Context, string, digest.Digest) (int64, error) {
	return int64(len(f.data)), nil
}

func (f *senderFake) OpenBlob(context.Context, string, digest.Digest) (io.ReadSeekCloser, int64, error) {
	return &sendingReader{Reader: bytes.NewReader(f.data), f: f}, int64(len(f.data)), nil
}

type sendingReader struct {
	*bytes.Reader
	f *senderFake
}

func (r *sendingReader) Close() error { return nil }

func (r *sendingReader) SendTo(w io.Writer, limit int64) (int64, error) {
	r.f.sends = append(r.f.sends, limit)
	return io.Copy(w, io.LimitReader(r.Reader, limit))
}

func TestBlobContentThatSendsItselfIsSentWholeAndByRange(t *testing.T) {
	data := randomBlob(3<<20 + 11)
	d := digest.FromBytes(data)
	reg := &senderFake{data: data}
	h, err := New(DefaultConfig(), reg, nil, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(rng string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/app/blobs/"+d.String(), nil)
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	if code, b := get(""); code != http.StatusOK || !bytes.Equal(b, data) {
		t.Fatalf("GET: %d, %d bytes; want 200 and the %d bytes of the blob", code, len(b), len(data))
	}
	if len(reg.sends) != 1 || reg.sends[0] != int64(len(data)) {
		t.Fatalf("GET: SendTo calls with limits %v; want one of %d", reg.sends, len(data))
	}
	reg.sends = nil
	if code, b := get("bytes=100-1048675"); code != http.StatusPartialContent || !bytes.Equal(b, data[100:1048676]) {
		t.Fatalf("GET with Range: %d, %d bytes; want 206 and bytes 100-1048675", code, len(b))
	}
	if len(reg.sends) != 1 || reg.sends[0] != 1<<20 {
		t.Fatalf("GET with Range: SendTo calls with limits %v; want one of %d", reg.sends, 1<<20)
	}
}

func randomBlob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>8)
	}
	return b
}
