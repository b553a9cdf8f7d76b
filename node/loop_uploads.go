package node

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/meshreg/meshreg/blobstore"
)

// uploadExpirer removes the upload sessions idle for longer than idle and
// says how many it removed (blobstore.Store).
type uploadExpirer interface {
	ExpireUploads(idle time.Duration) int
}

// uploadExpiry removes upload sessions idle past the configured timeout,
// checking a quarter of the timeout apart (at most a minute).
type uploadExpiry struct {
	uploads uploadExpirer
	idle    time.Duration
	// forget drops what the node remembers of sessions the store no
	// longer has (Node.forgetExpiredUploads).
	forget func()
	log    *slog.Logger
}

func newUploadExpiry(uploads uploadExpirer, idle time.Duration, forget func(), log *slog.Logger) *uploadExpiry {
	return &uploadExpiry{uploads: uploads, idle: idle, forget: forget, log: log}
}

// every is the pause between two checks.
func (u *uploadExpiry) every() time.Duration {
	return max(min(u.idle/4, time.Minute), time.Millisecond)
}

func (u *uploadExpiry) Run(ctx context.Context) error {
	t := time.NewTicker(u.every())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		removed := u.uploads.ExpireUploads(u.idle)
		if removed == 0 {
			continue
		}
		u.forget()
		u.log.Info("expired idle uploads", "count", removed, "idle", u.idle)
	}
}

// forgetExpiredUploads drops the upload sessions the blob store expired
// from the node's record of who opened them.
func (n *Node) forgetExpiredUploads() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.uploads {
		if _, err := n.blobs.Upload(id); errors.Is(err, blobstore.ErrUploadNotFound) {
			delete(n.uploads, id)
		}
	}
}
