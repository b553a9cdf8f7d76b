package api

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
)

// startUpload answers POST /v2/<name>/blobs/uploads/: a cross-repository
// mount, a monolithic upload (?digest=), or the start of a session.
func (h *Handler) startUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	q := r.URL.Query()
	if q.Has("mount") {
		d, err := parseDigest(q.Get("mount"))
		if err != nil {
			return err
		}
		from := q.Get("from")
		if from != "" {
			if err := validateName(from); err != nil {
				return err
			}
		}
		mounted, err := h.reg.MountBlob(r.Context(), rt.name, from, d)
		if err != nil {
			return err
		}
		if mounted {
			h.logWrite(r, "blob mounted", rt.name, slog.String("from", from), slog.String("digest", d.String()))
			if h.cfg.Notifier != nil {
				size, _ := h.reg.StatBlob(r.Context(), rt.name, d)
				h.notify(r, Event{Action: actionMount, Repository: rt.name, FromRepository: from, Digest: d.String(), MediaType: blobMediaType, Size: size, URL: blobURL(rt.name, d)})
			}
			return blobCreated(w, rt.name, d)
		}
		// Not mountable: the spec says to fall back to a new session.
	} else if q.Has("digest") {
		d, err := parseDigest(q.Get("digest"))
		if err != nil {
			return err
		}
		size, err := h.reg.PutBlob(r.Context(), rt.name, d, h.body(w, r))
		if err != nil {
			return err
		}
		h.logWrite(r, "blob uploaded", rt.name, slog.String("digest", d.String()), slog.Int64("size", size))
		h.notifyBlobPush(r, rt.name, d, size)
		return blobCreated(w, rt.name, d)
	}
	id, err := h.reg.StartUpload(r.Context(), rt.name)
	if err != nil {
		return err
	}
	return uploadAccepted(w, http.StatusAccepted, rt.name, id, 0)
}

func (h *Handler) uploadStatus(w http.ResponseWriter, r *http.Request, rt route) error {
	size, err := h.reg.UploadSize(r.Context(), rt.name, rt.ref)
	if err != nil {
		return err
	}
	return uploadAccepted(w, http.StatusNoContent, rt.name, rt.ref, size)
}

func (h *Handler) patchUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	size, err := h.appendChunk(w, r, rt)
	if err != nil {
		return err
	}
	return uploadAccepted(w, http.StatusAccepted, rt.name, rt.ref, size)
}

// putUpload appends the request's body, if any, and commits the session.
func (h *Handler) putUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	q := r.URL.Query()
	if !q.Has("digest") {
		return oci.Errorf(oci.DigestInvalid, "the digest query parameter is required to complete an upload")
	}
	d, err := parseDigest(q.Get("digest"))
	if err != nil {
		return err
	}
	if r.ContentLength != 0 {
		if _, err := h.appendChunk(w, r, rt); err != nil {
			return err
		}
	}
	size, err := h.reg.FinishUpload(r.Context(), rt.name, rt.ref, d)
	if err != nil {
		return err
	}
	h.logWrite(r, "blob uploaded", rt.name, slog.String("digest", d.String()), slog.Int64("size", size))
	h.notifyBlobPush(r, rt.name, d, size)
	return blobCreated(w, rt.name, d)
}

// notifyBlobPush tells the Notifier about a blob upload committed.
func (h *Handler) notifyBlobPush(r *http.Request, repo string, d digest.Digest, size int64) {
	h.notify(r, Event{Action: actionPush, Repository: repo, Digest: d.String(), MediaType: blobMediaType, Size: size, URL: blobURL(repo, d)})
}

func (h *Handler) cancelUpload(w http.ResponseWriter, r *http.Request, rt route) error {
	if err := h.reg.CancelUpload(r.Context(), rt.name, rt.ref); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// appendChunk appends the request body to the session, checking its
// Content-Range, when given, against what the session already holds.
func (h *Handler) appendChunk(w http.ResponseWriter, r *http.Request, rt route) (int64, error) {
	body := h.body(w, r)
	if cr := r.Header.Get("Content-Range"); cr != "" {
		start, end, err := parseContentRange(cr)
		if err != nil {
			return 0, oci.Wrap(oci.BlobUploadInvalid, err, "invalid Content-Range: send <start>-<end>, inclusive").
				WithStatus(http.StatusRequestedRangeNotSatisfiable)
		}
		size, err := h.reg.UploadSize(r.Context(), rt.name, rt.ref)
		if err != nil {
			return 0, err
		}
		if start != size {
			w.Header().Set("Location", uploadLocation(rt.name, rt.ref))
			w.Header().Set("Range", uploadRange(size))
			return 0, oci.Errorf(oci.BlobUploadInvalid, "chunk starts at byte %d but the upload holds %d bytes: resume from byte %d", start, size, size).
				WithStatus(http.StatusRequestedRangeNotSatisfiable)
		}
		length := end - start + 1
		if r.ContentLength >= 0 && r.ContentLength != length {
			return 0, oci.Errorf(oci.SizeInvalid, "Content-Range %q spans %d bytes but Content-Length is %d", cr, length, r.ContentLength)
		}
		body = &exactReader{r: body, remaining: length}
	}
	return h.reg.AppendUpload(r.Context(), rt.name, rt.ref, body)
}

// exactReader reads exactly remaining bytes from r: fewer is an error (so
// the session rolls back the chunk), more are left unread.
type exactReader struct {
	r         io.Reader
	remaining int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.remaining <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.remaining {
		p = p[:e.remaining]
	}
	n, err := e.r.Read(p)
	e.remaining -= int64(n)
	if err == io.EOF && e.remaining > 0 {
		return n, fmt.Errorf("chunk ended %d bytes before the end of its Content-Range: %w", e.remaining, io.ErrUnexpectedEOF)
	}
	if e.remaining == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func uploadLocation(name, id string) string { return "/v2/" + name + "/blobs/uploads/" + id }

func uploadAccepted(w http.ResponseWriter, status int, name, id string, size int64) error {
	hdr := w.Header()
	hdr.Set("Location", uploadLocation(name, id))
	hdr.Set("Range", uploadRange(size))
	hdr.Set("Docker-Upload-UUID", id)
	hdr.Set("Content-Length", "0")
	w.WriteHeader(status)
	return nil
}

func blobCreated(w http.ResponseWriter, name string, d digest.Digest) error {
	hdr := w.Header()
	hdr.Set("Location", "/v2/"+name+"/blobs/"+d.String())
	hdr.Set("Docker-Content-Digest", d.String())
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}
