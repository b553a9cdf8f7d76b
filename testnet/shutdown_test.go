package testnet_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet"
)

// slowReader yields its content in small pieces with pauses, as a client
// on a slow link would.
type slowReader struct {
	r     io.Reader
	piece int
	pause time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.pause)
	if len(p) > s.piece {
		p = p[:s.piece]
	}
	return s.r.Read(p)
}

// TestGracefulShutdownFinishesInFlightUpload sends SIGTERM while a slow
// monolithic upload is in flight: the upload still completes with 201, the
// node exits with status 0, and after a restart the blob is there.
func TestGracefulShutdownFinishesInFlightUpload(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{})
	content := testnet.RandomBytes(2 << 20)
	d := digest.FromBytes(content)

	type result struct {
		status int
		err    error
	}
	done := make(chan result, 1)
	go func() {
		body := &slowReader{r: bytes.NewReader(content), piece: 64 << 10, pause: 40 * time.Millisecond} // ~1.3 s
		req, err := http.NewRequest(http.MethodPost, n.URL()+"/v2/e2e/shutdown/blobs/uploads/?digest="+d.String(), body)
		if err != nil {
			done <- result{err: err}
			return
		}
		req.ContentLength = int64(len(content))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		resp.Body.Close()
		done <- result{status: resp.StatusCode}
	}()

	time.Sleep(300 * time.Millisecond) // the upload is under way
	n.Stop()                           // SIGTERM; fails the test unless the exit status is 0
	select {
	case r := <-done:
		if r.err != nil || r.status != http.StatusCreated {
			t.Fatalf("upload in flight during SIGTERM: status %d, err %v; want 201", r.status, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("upload in flight during SIGTERM never finished")
	}

	n.Restart()
	c := testnet.NewClient(n.URL())
	if err := c.VerifyBlob(t.Context(), "e2e/shutdown", d, int64(len(content))); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}
