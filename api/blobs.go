package api

import (
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/meshreg/meshreg/api/oci"
)

func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	hdr := w.Header()
	if r.Method == http.MethodHead && r.Header.Get("Range") == "" {
		size, err := h.reg.StatBlob(r.Context(), rt.name, d)
		if err != nil {
			return err
		}
		setBlobHeaders(hdr, d.String())
		hdr.Set("Content-Length", itoa(size))
		hdr.Set("Accept-Ranges", "bytes")
		w.WriteHeader(http.StatusOK)
		return nil
	}
	content, _, err := h.reg.OpenBlob(r.Context(), rt.name, d)
	if err != nil {
		return err
	}
	defer content.Close()
	setBlobHeaders(hdr, d.String())
	// ServeContent answers Range (206) and conditional requests, and
	// copies an *os.File with sendfile. Its own errors (416 for a Range
	// it cannot serve) are plain text: they become OCI errors here.
	cw := &contentErrorWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, content)
	if cw.status != 0 {
		hdr.Del("X-Content-Type-Options")
		return oci.Errorf(oci.Unsupported, "the Range header %q cannot be served for this blob (%s): ask for bytes=START-END within the blob",
			truncate(r.Header.Get("Range")), hdr.Get("Content-Range")).WithStatus(cw.status)
	}
	if r.Method == http.MethodGet && r.Header.Get("Range") == "" {
		size, _ := content.Seek(0, io.SeekEnd)
		h.notify(r, Event{Action: actionPull, Repository: rt.name, Digest: d.String(), MediaType: blobMediaType, Size: size, URL: blobURL(rt.name, d)})
	}
	return nil
}

// contentErrorWriter passes a response through, except an error status
// (>= 400) and its body, which it holds back so that the caller writes an
// OCI error instead. It keeps the writer's io.ReaderFrom (sendfile) and
// unwraps for http.ResponseController.
type contentErrorWriter struct {
	http.ResponseWriter
	status int
}

func (c *contentErrorWriter) WriteHeader(code int) {
	if code >= http.StatusBadRequest {
		c.status = code
		return
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *contentErrorWriter) Write(b []byte) (int, error) {
	if c.status != 0 {
		return len(b), nil
	}
	return c.ResponseWriter.Write(b)
}

func (c *contentErrorWriter) ReadFrom(r io.Reader) (int64, error) {
	if c.status != 0 {
		return io.Copy(io.Discard, r)
	}
	// A blob still being fetched (node's partial reader) sends the bytes
	// it has with sendfile itself; ServeContent hands it over wrapped in
	// an *io.LimitedReader.
	if lr, ok := r.(*io.LimitedReader); ok {
		if s, ok := lr.R.(BlobSender); ok {
			n, err := s.SendTo(c.ResponseWriter, lr.N)
			lr.N -= n
			return n, err
		}
	}
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.ResponseWriter}, r)
}

// BlobSender is blob content that copies itself to a response, up to
// limit bytes: a blob still being fetched, whose reader waits for the bytes
// and hands those it has to the response as file sections (sendfile).
type BlobSender interface {
	SendTo(w io.Writer, limit int64) (int64, error)
}

func (c *contentErrorWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

func (h *Handler) deleteBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	if err := h.reg.DeleteBlob(r.Context(), rt.name, d); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	h.logWrite(r, "blob deleted", rt.name, slog.String("digest", d.String()))
	h.notify(r, Event{Action: actionDelete, Repository: rt.name, Digest: d.String()})
	return nil
}

func setBlobHeaders(hdr http.Header, d string) {
	hdr.Set("Docker-Content-Digest", d)
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Etag", `"`+d+`"`)
	// Blobs never change: let caches keep them.
	hdr.Set("Cache-Control", "max-age=31536000")
}
