package api

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// slowSource yields piece bytes every pause, as a blob arriving from a
// slow peer does.
type slowSource struct {
	data  []byte
	piece int
	pause time.Duration
}

func (s *slowSource) Read(p []byte) (int, error) {
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause)
	n := copy(p[:min(len(p), s.piece)], s.data)
	s.data = s.data[n:]
	return n, nil
}

// TestIdleWriterSlowSourceIsNotTheClientsFault: a response whose bytes
// arrive slowly (from a peer) to a client that reads at once runs far
// longer than the idle timeout and is not cut: the deadline moves with the
// bytes written, not with the pieces asked for.
func TestIdleWriterSlowSourceIsNotTheClientsFault(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	data := bytes.Repeat([]byte("x"), 40<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		iw := newIdleWriter(w, idle)
		defer iw.renew()
		// 40 pieces of 1 KiB every 40 ms: ~1.6 s, over 5 idle periods.
		src := &slowSource{data: data, piece: 1 << 10, pause: 40 * time.Millisecond}
		if _, err := io.Copy(iw, io.LimitReader(src, int64(len(data)))); err != nil {
			t.Errorf("copy to a reading client: %v", err)
		}
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, %v; want all %d", len(got), err, len(data))
	}
}

func TestMethodLabel(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"GET": "GET", "HEAD": "HEAD", "PUT": "PUT", "POST": "POST", "PATCH": "PATCH", "DELETE": "DELETE",
		"OPTIONS": "OPTIONS", "get": "other", "TRACE": "other", "CONNECT": "other", "X1234": "other", "": "other",
	} {
		if got := methodLabel(in); got != want {
			t.Errorf("methodLabel(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestRemoteClient(t *testing.T) {
	t.Parallel()
	for remote, want := range map[string]string{
		"192.0.2.7:5555":                       "192.0.2.7",
		"[::ffff:192.0.2.7]:5555":              "192.0.2.7",
		"[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:1": "2001:db8:1:2::/64",
		"[2001:db8:1:2::1%eth0]:1":             "2001:db8:1:2::/64",
		"[::1]:80":                             "::/64",
		"not an address":                       "not an address",
	} {
		r := &http.Request{RemoteAddr: remote}
		if got := remoteClient(r); got != want {
			t.Errorf("remoteClient(%q) = %q; want %q", remote, got, want)
		}
	}
}
