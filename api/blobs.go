package api

import (
	"net/http"
	"time"
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
	// ServeContent answers Range (206, 416) and conditional requests, and
	// copies an *os.File with sendfile.
	http.ServeContent(w, r, "", time.Time{}, content)
	return nil
}

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
	return nil
}

func setBlobHeaders(hdr http.Header, d string) {
	hdr.Set("Docker-Content-Digest", d)
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Etag", `"`+d+`"`)
	// Blobs never change: let caches keep them.
	hdr.Set("Cache-Control", "max-age=31536000")
}
