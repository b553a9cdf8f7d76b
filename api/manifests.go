package api

import (
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/meshreg/meshreg/api/oci"
)

func (h *Handler) getManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	if err := validateReference(rt.ref); err != nil {
		return err
	}
	m, err := h.reg.GetManifest(r.Context(), rt.name, rt.ref)
	if err != nil {
		return err
	}
	etag := `"` + m.Digest.String() + `"`
	hdr := w.Header()
	hdr.Set("Docker-Content-Digest", m.Digest.String())
	hdr.Set("Etag", etag)
	if m.Warning != "" {
		hdr.Set("Warning", m.Warning)
	}
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	hdr.Set("Content-Type", m.MediaType)
	hdr.Set("Content-Length", itoa(int64(len(m.Body))))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(m.Body)
		e := Event{Action: actionPull, Repository: rt.name, Digest: m.Digest.String(), MediaType: m.MediaType,
			Size: int64(len(m.Body)), URL: manifestURL(rt.name, m.Digest)}
		if !isDigestReference(rt.ref) {
			e.Tag = rt.ref
		}
		h.notify(r, e)
	}
	return nil
}

func (h *Handler) putManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	if err := validateReference(rt.ref); err != nil {
		return err
	}
	limit := h.cfg.MaxManifestSize
	if r.ContentLength > limit {
		return manifestTooLarge(limit)
	}
	body, err := io.ReadAll(io.LimitReader(h.body(w, r), limit+1))
	if err != nil {
		return oci.Wrap(oci.ManifestInvalid, err, "reading manifest body").WithStatus(http.StatusBadRequest)
	}
	if int64(len(body)) > limit {
		return manifestTooLarge(limit)
	}
	if r.ContentLength >= 0 && int64(len(body)) != r.ContentLength {
		return oci.Errorf(oci.SizeInvalid, "manifest body is %d bytes but Content-Length said %d", len(body), r.ContentLength)
	}
	// The tag query parameters (distribution-spec after v1.1) push one
	// manifest by digest and tag it in the same request.
	tags := r.URL.Query()["tag"]
	for _, tag := range tags {
		if isDigestReference(tag) {
			return oci.Errorf(oci.ManifestInvalid, "tag parameter %q is not a tag", truncate(tag))
		}
		if err := validateReference(tag); err != nil {
			return err
		}
	}
	d, subject, err := h.reg.PutManifest(r.Context(), rt.name, rt.ref, r.Header.Get("Content-Type"), body, tags)
	if err != nil {
		return err
	}
	hdr := w.Header()
	hdr.Set("Location", "/v2/"+rt.name+"/manifests/"+d.String())
	hdr.Set("Docker-Content-Digest", d.String())
	if subject != "" {
		hdr.Set("OCI-Subject", subject.String())
	}
	for _, tag := range tags {
		hdr.Add("OCI-Tag", tag)
	}
	hdr.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	attrs := []slog.Attr{slog.String("reference", rt.ref), slog.String("digest", d.String()),
		slog.String("media_type", r.Header.Get("Content-Type")), slog.Int("size", len(body))}
	if len(tags) > 0 {
		attrs = append(attrs, slog.Any("tags", tags))
	}
	h.logWrite(r, "manifest pushed", rt.name, attrs...)
	// One push event per tag the manifest got (Distribution's), one
	// without a tag for a push by digest alone.
	push := Event{Action: actionPush, Repository: rt.name, Digest: d.String(), MediaType: manifestMediaType(r.Header.Get("Content-Type"), body),
		Size: int64(len(body)), URL: manifestURL(rt.name, d)}
	if !isDigestReference(rt.ref) {
		tags = append([]string{rt.ref}, tags...)
	}
	events := make([]Event, 0, max(1, len(tags)))
	for _, tag := range tags {
		e := push
		e.Tag = tag
		events = append(events, e)
	}
	if len(events) == 0 {
		events = append(events, push)
	}
	h.notify(r, events...)
	return nil
}

func manifestTooLarge(limit int64) error {
	return oci.Errorf(oci.SizeInvalid, "manifest exceeds the size limit of %d bytes: split it or raise --max-manifest-size", limit).
		WithStatus(http.StatusRequestEntityTooLarge)
}

func (h *Handler) deleteManifest(w http.ResponseWriter, r *http.Request, rt route) error {
	if err := validateReference(rt.ref); err != nil {
		return err
	}
	if err := h.reg.DeleteManifest(r.Context(), rt.name, rt.ref); err != nil {
		return err
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	msg := "tag deleted"
	if isDigestReference(rt.ref) {
		msg = "manifest deleted"
	}
	h.logWrite(r, msg, rt.name, slog.String("reference", rt.ref))
	e := Event{Action: actionDelete, Repository: rt.name}
	if isDigestReference(rt.ref) {
		e.Digest = rt.ref
	} else {
		e.Tag = rt.ref
	}
	h.notify(r, e)
	return nil
}

// errBodyIdle is the cause when a client stops sending a request body.
var errBodyIdle = errors.New("request body idle for too long")
