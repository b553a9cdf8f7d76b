package api_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
)

// TestUnknownMethodsAreRefusedAndNotLabels sends made-up methods to every
// kind of /v2/ route: each gets 405 UNSUPPORTED with an Allow header, and
// the request metrics do not grow a series per method.
func TestUnknownMethodsAreRefusedAndNotLabels(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	paths := []string{"/v2/", "/v2/app/blobs/uploads/", "/v2/app/manifests/v1", "/v2/app/tags/list",
		"/v2/app/blobs/" + digest.FromString("x").String()}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 300 {
		method := fmt.Sprintf("M%08X", rng.Uint32())
		path := paths[i%len(paths)]
		resp, body := r.do(method, path, nil)
		expect(t, resp, body, http.StatusMethodNotAllowed, "UNSUPPORTED")
		if resp.Header.Get("Allow") == "" {
			t.Fatalf("%s %s: 405 without an Allow header", method, path)
		}
	}
	resp, body := r.do("GET", "/metrics", nil)
	expect(t, resp, body, http.StatusOK, "")
	series := 0
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "meshreg_http_requests_total{") {
			series++
			if strings.Contains(line, `method="M`) {
				t.Fatalf("a client-chosen method became a label: %s", line)
			}
		}
	}
	if series == 0 || series > 10 {
		t.Errorf("meshreg_http_requests_total has %d series after 300 made-up methods; want a handful", series)
	}
	if !strings.Contains(string(body), `method="other"`) {
		t.Error(`no method="other" series for the made-up methods`)
	}
}

// clientFrom returns an HTTP client whose connections come from ip (any
// 127.0.0.0/8 address works on loopback), so a test can be several clients.
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

func post(t *testing.T, c *http.Client, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := c.Post(url, "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// TestUploadSessionLimits: past the per-client bound a client gets 429
// TOOMANYREQUESTS, others go on until the node's bound, and an ended
// session frees its slot.
func TestUploadSessionLimits(t *testing.T) {
	t.Parallel()
	r := newRegistryWith(t, t.TempDir(), func(c *node.Config) { c.MaxUploads, c.MaxUploadsPerClient = 5, 3 }, nil)
	a, b := clientFrom("127.0.0.1"), clientFrom("127.0.0.2")
	start := r.url + "/v2/app/blobs/uploads/"
	var aLocs []string
	for range 3 {
		resp, body := post(t, a, start)
		expect(t, resp, body, http.StatusAccepted, "")
		aLocs = append(aLocs, resp.Header.Get("Location"))
	}
	resp, body := post(t, a, start)
	expect(t, resp, body, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	for range 2 {
		resp, body := post(t, b, start)
		expect(t, resp, body, http.StatusAccepted, "")
	}
	resp, body = post(t, b, start) // the node is full, b is below its own bound
	expect(t, resp, body, http.StatusTooManyRequests, "TOOMANYREQUESTS")

	resp, body = r.do("DELETE", aLocs[0], nil)
	expect(t, resp, body, http.StatusNoContent, "")
	resp, body = post(t, b, start)
	expect(t, resp, body, http.StatusAccepted, "")

	// A monolithic push needs no session and still works.
	r.pushBlob("app", []byte("still pushable"))
}

// stalledGet sends a GET for path on a raw connection and reads nothing.
func stalledGet(t *testing.T, url, path string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(16 << 10)
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestClientThatStopsReadingIsCut: a client that asks for a big blob and
// reads nothing is disconnected after the client idle timeout, while a
// slow client that keeps reading gets the whole blob.
func TestClientThatStopsReadingIsCut(t *testing.T) {
	t.Parallel()
	const idle = 1500 * time.Millisecond
	r := newRegistry(t, t.TempDir(), func(c *api.Config) { c.ClientIdleTimeout = idle })
	blob := bytes.Repeat([]byte("0123456789abcdef"), 3<<19) // 24 MiB: more than socket buffers hold
	d := r.pushBlob("big", blob)
	path := "/v2/big/blobs/" + d.String()

	conn := stalledGet(t, r.url, path)
	time.Sleep(idle + 2*time.Second) // the server gives up meanwhile
	// Drain what the buffers hold: the connection must end short of the blob.
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if errors.Is(err, net.ErrClosed) || isTimeout(err) {
		t.Fatalf("the stalled connection was not closed by the server: read %d bytes, then %v", n, err)
	}
	if n >= int64(len(blob)) {
		t.Fatalf("the stalled client still got the whole blob (%d bytes)", n)
	}

	// A paced reader that keeps reading gets every byte, although the
	// whole response takes several idle periods.
	slow, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := fmt.Fprintf(slow, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path); err != nil {
		t.Fatal(err)
	}
	_ = slow.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(slow), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	began := time.Now()
	got := make([]byte, 0, len(blob))
	buf := make([]byte, 64<<10)
	for {
		m, err := io.ReadFull(resp.Body, buf)
		got = append(got, buf[:m]...)
		if err == io.EOF || err == io.ErrUnexpectedEOF && len(got) == len(blob) {
			break
		}
		if err != nil {
			t.Fatalf("paced reader cut after %d bytes: %v", len(got), err)
		}
		time.Sleep(10 * time.Millisecond) // at most ~6 MB/s
	}
	t.Logf("paced reader took %s for %d bytes (client idle timeout %s)", time.Since(began), len(got), idle)
	if !bytes.Equal(got, blob) {
		t.Fatalf("slow reader got %d bytes, want the %d of the blob", len(got), len(blob))
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestWritesInFlightPerClient: a client may have at most
// MaxWritesPerClient requests with a body in flight; past it, 429
// TOOMANYREQUESTS, while other clients and reads go on.
func TestWritesInFlightPerClient(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), func(c *api.Config) { c.MaxWritesPerClient = 3 })
	a := clientFrom("127.0.0.1")
	content := bytes.Repeat([]byte("z"), 1<<20)
	d := digest.FromBytes(content)
	type result struct {
		status int
		err    error
	}
	var writers []*io.PipeWriter
	results := make(chan result, 3)
	for range 3 {
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		req, err := http.NewRequest(http.MethodPost, r.url+"/v2/slow/blobs/uploads/?digest="+d.String(), pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(content))
		go func() {
			resp, err := a.Do(req)
			if err != nil {
				results <- result{err: err}
				return
			}
			resp.Body.Close()
			results <- result{status: resp.StatusCode}
		}()
		if _, err := pw.Write(content[:10]); err != nil { // the request is in flight
			t.Fatal(err)
		}
	}
	// A written body chunk has left the client, not necessarily reached
	// the server's handler: wait (bounded) until the three count.
	resp, body := post(t, a, r.url+"/v2/slow/blobs/uploads/")
	for deadline := time.Now().Add(5 * time.Second); resp.StatusCode == http.StatusAccepted && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		resp, body = post(t, a, r.url+"/v2/slow/blobs/uploads/")
	}
	expect(t, resp, body, http.StatusTooManyRequests, "TOOMANYREQUESTS")
	if !strings.Contains(string(body), "--max-writes-per-client") {
		t.Fatalf("the 429 is not the writes-in-flight limit's: %s", body)
	}
	resp, body = post(t, clientFrom("127.0.0.2"), r.url+"/v2/slow/blobs/uploads/")
	expect(t, resp, body, http.StatusAccepted, "")
	resp, body = r.do("GET", "/v2/", nil) // reads are not counted
	expect(t, resp, body, http.StatusOK, "")

	// Finish the slow uploads: each succeeds, and the slots come back.
	for _, pw := range writers {
		if _, err := pw.Write(content[10:]); err != nil {
			t.Fatal(err)
		}
		pw.Close()
	}
	for range 3 {
		if res := <-results; res.err != nil || res.status != http.StatusCreated {
			t.Fatalf("slow upload: %d, %v; want 201", res.status, res.err)
		}
	}
	resp, body = post(t, a, r.url+"/v2/slow/blobs/uploads/")
	expect(t, resp, body, http.StatusAccepted, "")
}
