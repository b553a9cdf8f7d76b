package api

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// idleBody is a request body that fails when the client sends nothing for
// idle: each read pushes the connection's read deadline forward, so a slow
// but moving upload goes on and a stalled one is cut off.
type idleBody struct {
	rc   *http.ResponseController
	body io.Reader
	idle time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.idle))
	n, err := b.body.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = errBodyIdle
	}
	return n, err
}

// body returns r's body guarded by the idle timeout.
func (h *Handler) body(w http.ResponseWriter, r *http.Request) io.Reader {
	return &idleBody{rc: http.NewResponseController(w), body: r.Body, idle: h.cfg.BodyIdleTimeout}
}
