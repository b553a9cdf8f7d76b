package api

import (
	"net/http"
	"net/url"
	"strconv"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api/oci"
)

// listPage reads the n and last query parameters of a listing. n is -1
// when absent (list everything, up to the server's page limit).
func (h *Handler) listPage(q url.Values) (last string, n int, err error) {
	last = q.Get("last")
	n = -1
	if q.Has("n") {
		n, err = strconv.Atoi(q.Get("n"))
		if err != nil || n < 0 {
			return "", 0, oci.Errorf(oci.Unsupported, "invalid n=%q: use a non-negative integer", truncate(q.Get("n"))).WithStatus(http.StatusBadRequest)
		}
	}
	if n < 0 || n > h.cfg.MaxListPage {
		n = h.cfg.MaxListPage
	}
	return last, n, nil
}

// page fetches one page of a listing and sets the Link header to the next
// page when there is more. It asks list for one entry more than it returns
// to know whether more exists.
func page(w http.ResponseWriter, path, last string, n int, list func(last string, n int) ([]string, error)) ([]string, error) {
	if n == 0 {
		return []string{}, nil
	}
	items, err := list(last, n+1)
	if err != nil {
		return nil, err
	}
	if len(items) > n {
		items = items[:n]
		next := url.Values{"last": {items[n-1]}, "n": {strconv.Itoa(n)}}
		w.Header().Set("Link", "<"+path+"?"+next.Encode()+`>; rel="next"`)
	}
	return items, nil
}

func (h *Handler) tags(w http.ResponseWriter, r *http.Request, rt route) error {
	last, n, err := h.listPage(r.URL.Query())
	if err != nil {
		return err
	}
	tags, err := page(w, "/v2/"+rt.name+"/tags/list", last, n, func(last string, n int) ([]string, error) {
		return h.reg.Tags(r.Context(), rt.name, last, n)
	})
	if err != nil {
		return err
	}
	writeJSON(w, r, http.StatusOK, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{rt.name, tags})
	return nil
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request, _ route) error {
	last, n, err := h.listPage(r.URL.Query())
	if err != nil {
		return err
	}
	repos, err := page(w, "/v2/_catalog", last, n, func(last string, n int) ([]string, error) {
		return h.reg.Repositories(r.Context(), last, n)
	})
	if err != nil {
		return err
	}
	writeJSON(w, r, http.StatusOK, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{repos})
	return nil
}

// referrers answers with an image index of the manifests whose subject is
// the given digest; never 404, as the spec requires.
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request, rt route) error {
	subject, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	descs, err := h.reg.Referrers(r.Context(), rt.name, subject)
	if err != nil {
		return err
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		kept := descs[:0:0]
		for _, d := range descs {
			if d.ArtifactType == at {
				kept = append(kept, d)
			}
		}
		descs = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if descs == nil {
		descs = []ocispec.Descriptor{}
	}
	writeJSON(w, r, http.StatusOK, ocispec.MediaTypeImageIndex, struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Manifests     []ocispec.Descriptor `json:"manifests"`
	}{2, ocispec.MediaTypeImageIndex, descs})
	return nil
}
