package api

import (
	"context"
	"io"
	"net/http"

	"github.com/meshreg/meshreg/api/oci"
)

// Backuper is an optional ability of a Node: it writes a backup archive of
// the cluster's metadata (and, with blobs, of every blob it links) to w.
// An error after the first byte leaves an archive without its trailer,
// which restore refuses.
type Backuper interface {
	Backup(ctx context.Context, w io.Writer, blobs bool) error
}

// BackupMediaType is the Content-Type of GET /_meshreg/v1/backup.
const BackupMediaType = "application/vnd.meshreg.backup.v1+tar"

// backup serves GET /_meshreg/v1/backup[?blobs=1] (admin): the archive,
// streamed as the node writes it.
func (h *Handler) backup(w http.ResponseWriter, r *http.Request) {
	b, ok := h.node.(Backuper)
	if !ok {
		h.writeError(w, r, oci.Errorf(oci.Unsupported, "this node takes no backups"))
		return
	}
	blobs := false
	switch v := r.URL.Query().Get("blobs"); v {
	case "", "0", "false":
	case "1", "true":
		blobs = true
	default:
		h.writeError(w, r, oci.Errorf(oci.Unsupported, "blobs=%q: use blobs=1 or leave it out", truncate(v)))
		return
	}
	cw := &startedWriter{w: w, start: func() {
		w.Header().Set("Content-Type", BackupMediaType)
		w.Header().Set("Cache-Control", "no-store")
	}}
	if err := b.Backup(r.Context(), cw, blobs); err != nil {
		if !cw.started {
			h.writeError(w, r, err)
			return
		}
		// The status is sent: the archive ends without its trailer.
		h.log.Warn("backup failed midway; the client's archive has no trailer and will be refused", "err", err)
	}
}

// startedWriter calls start before the first byte goes out.
type startedWriter struct {
	w       io.Writer
	start   func()
	started bool
}

func (s *startedWriter) Write(p []byte) (int, error) {
	if !s.started && len(p) > 0 {
		s.started = true
		s.start()
	}
	return s.w.Write(p)
}
