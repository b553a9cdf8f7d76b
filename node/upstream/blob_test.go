package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(b)
	return b
}

// serveRange answers a blob GET from data honouring Range, writing at most
// cut bytes of the body (cut < 0: all) before breaking the connection.
func serveRange(w http.ResponseWriter, r *http.Request, data []byte, cut int, honourRange bool) {
	start := 0
	if rh := r.Header.Get("Range"); rh != "" && honourRange {
		s := strings.TrimSuffix(strings.TrimPrefix(rh, "bytes="), "-")
		start, _ = strconv.Atoi(s)
		w.Header().Set("Content-Range", "bytes "+strconv.Itoa(start)+"-"+strconv.Itoa(len(data)-1)+"/"+strconv.Itoa(len(data)))
		w.Header().Set("Content-Length", strconv.Itoa(len(data)-start))
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
	}
	body := data[start:]
	if cut >= 0 && cut < len(body) {
		w.Write(body[:cut])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection breaks mid-body
	}
	w.Write(body)
}

func TestBlobResumesAfterCutStreams(t *testing.T) {
	data := randomBytes(256 << 10)
	d := digest.FromBytes(data)
	tests := []struct {
		name        string
		offset      int64
		cuts        []int // bytes written by the 1st, 2nd, … response before it breaks
		honourRange bool
		wantRanges  []string
		refetched   int64 // bytes fetched twice (a server that ignores Range)
	}{
		{"two cuts", 0, []int{1000, 50000}, true, []string{"bytes=1000-", "bytes=51000-"}, 0},
		{"from an offset", 4096, []int{10}, true, []string{"bytes=4096-", "bytes=4106-"}, 0},
		{"cut before any byte", 0, []int{0, 0, 7}, true, []string{"bytes=7-"}, 0},
		{"server ignores Range", 0, []int{3000}, false, []string{"bytes=3000-"}, 3000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeRegistry(t)
			n := 0
			f.hook = func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") {
					return false
				}
				f.mu.Lock()
				if rh := r.Header.Get("Range"); rh != "" {
					f.ranges = append(f.ranges, rh)
				}
				cut := -1
				if n < len(tc.cuts) {
					cut = tc.cuts[n]
				}
				n++
				f.mu.Unlock()
				serveRange(w, r, data, cut, tc.honourRange)
				return true
			}
			obs := &countingObserver{}
			r := newTestRegistry(t, f, func(c *Config) { c.Observer = obs })
			rc, err := r.Blob(context.Background(), "a/b", d, int64(len(data)), tc.offset)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, data[tc.offset:]) {
				t.Fatalf("got %d bytes, want the %d bytes of the blob from %d (identical)", len(got), len(data)-int(tc.offset), tc.offset)
			}
			if strings.Join(f.ranges, " ") != strings.Join(tc.wantRanges, " ") {
				t.Errorf("Range requests %q, want %q", f.ranges, tc.wantRanges)
			}
			if want := int64(len(got)) + tc.refetched; obs.bytes["blob"] != want {
				t.Errorf("observer counted %d blob bytes fetched, want %d", obs.bytes["blob"], want)
			}
		})
	}
}

func TestBlobNeverReturnsMoreThanSize(t *testing.T) {
	data := randomBytes(10000)
	f := newFakeRegistry(t)
	withLength := false
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if withLength {
			serveRange(w, r, data, -1, true)
			return true
		}
		// No Content-Length: the body runs on past the size the caller knows.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		w.Write(data)
		return true
	}
	r := newTestRegistry(t, f, nil)
	for _, tc := range []struct{ size, offset int64 }{{4000, 0}, {4000, 4000}} {
		rc, err := r.Blob(context.Background(), "a/b", digest.FromBytes(data[:tc.size]), tc.size, tc.offset)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(got)) != tc.size-tc.offset || !bytes.Equal(got, data[tc.offset:tc.size]) {
			t.Errorf("size %d offset %d: read %d bytes, want %d", tc.size, tc.offset, len(got), tc.size-tc.offset)
		}
	}
	// Unknown size and no length: the stream's end is the end.
	rc, err := r.Blob(context.Background(), "a/b", digest.FromBytes(data), -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("unknown size: read %d bytes, want %d", len(got), len(data))
	}

	// A length or range total that disagrees with the size is refused.
	withLength = true
	if _, err := r.Blob(context.Background(), "a/b", digest.FromBytes(data[:4000]), 4000, 0); !errors.Is(err, ErrBadResponse) {
		t.Errorf("a 10000-byte answer when 4000 were expected: %v, want ErrBadResponse", err)
	}
	if _, err := r.Blob(context.Background(), "a/b", digest.FromBytes(data[:4000]), 4000, 1000); !errors.Is(err, ErrBadResponse) {
		t.Errorf("range answer for a 10000-byte blob when 4000 were expected: %v, want ErrBadResponse", err)
	}
	// Unknown size: the response's length is the size.
	rc, err = r.Blob(context.Background(), "a/b", digest.FromBytes(data), -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("unknown size with a length: read %d bytes, want %d", len(got), len(data))
	}
}

func TestBlobIdleStreamResumes(t *testing.T) {
	data := randomBytes(64 << 10)
	f := newFakeRegistry(t)
	stalled := false
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		f.mu.Lock()
		first := !stalled
		stalled = true
		f.mu.Unlock()
		if !first {
			serveRange(w, r, data, -1, true)
			return true
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:100])
		w.(http.Flusher).Flush()
		select { // stall until the client gives up on this stream
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return true
	}
	r := newTestRegistry(t, f, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	start := time.Now()
	rc, err := r.Blob(context.Background(), "a/b", digest.FromBytes(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, err %v; want the whole blob", len(got), err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("took %v: the idle timeout did not cut the stalled stream", el)
	}
}

func TestBlobGivesUpAfterRepeatedFailures(t *testing.T) {
	data := randomBytes(1000)
	f := newFakeRegistry(t)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Range") == "" {
			serveRange(w, r, data, 10, true)
			return true
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
		return true
	}
	r := newTestRegistry(t, f, nil)
	rc, err := r.Blob(context.Background(), "a/b", digest.FromBytes(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable after bounded retries", err)
	}
	if len(got) != 10 {
		t.Errorf("read %d bytes before giving up, want 10", len(got))
	}
}

func TestBlobCanceledContextStops(t *testing.T) {
	data := randomBytes(1 << 20)
	f := newFakeRegistry(t)
	f.hook = func(w http.ResponseWriter, r *http.Request) bool {
		serveRange(w, r, data, 1000, true) // always breaks
		return true
	}
	r := newTestRegistry(t, f, nil)
	r.retryWait = time.Hour // a resume would wait: cancel must end it
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := r.Blob(ctx, "a/b", digest.FromBytes(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	time.AfterFunc(100*time.Millisecond, cancel)
	done := make(chan error, 1)
	go func() { _, err := io.ReadAll(rc); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read did not return after the context was canceled")
	}
}
