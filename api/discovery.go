package api

import (
	"context"
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
		return h.pullableRepositories(r.Context(), last, n)
	})
	if err != nil {
		return err
	}
	writeJSON(w, r, http.StatusOK, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{repos})
	return nil
}

// maxReferrersPage bounds the descriptors of one referrers response (and
// is the page size when the client gives no n). A descriptor keeps at most
// a few KiB of annotations, so a page is a few MiB at most; the Link header
// leads to the next page, as the distribution-spec allows.
const maxReferrersPage = 1000

// referrers answers with an image index of the manifests whose subject is
// the given digest; never 404, as the spec requires. The listing is in
// pages of at most n (maxReferrersPage) descriptors, with a Link header to
// the next page (?last=<digest of the last one>&n=...).
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request, rt route) error {
	subject, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	last := q.Get("last")
	if last != "" {
		if _, err := parseDigest(last); err != nil {
			return err
		}
	}
	n := maxReferrersPage
	if q.Has("n") {
		n, err = strconv.Atoi(q.Get("n"))
		if err != nil || n < 0 {
			return oci.Errorf(oci.Unsupported, "invalid n=%q: use a non-negative integer", truncate(q.Get("n"))).WithStatus(http.StatusBadRequest)
		}
		n = min(n, maxReferrersPage)
	}
	at := q.Get("artifactType")
	descs := []ocispec.Descriptor{}
	if n > 0 {
		descs, err = h.reg.Referrers(r.Context(), rt.name, subject, at, last, n+1)
		if err != nil {
			return err
		}
	}
	if len(descs) > n {
		descs = descs[:n]
		next := url.Values{"last": {descs[n-1].Digest.String()}, "n": {strconv.Itoa(n)}}
		if at != "" {
			next.Set("artifactType", at)
		}
		w.Header().Set("Link", "</v2/"+rt.name+"/referrers/"+subject.String()+"?"+next.Encode()+`>; rel="next"`)
	}
	if at != "" {
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

// pullableRepositories lists up to n repositories after last that the
// request's client may pull: with access control on, it reads on past the
// ones it hides until it has n or the list ends.
func (h *Handler) pullableRepositories(ctx context.Context, last string, n int) ([]string, error) {
	if h.cfg.Auth == nil {
		return h.reg.Repositories(ctx, last, n)
	}
	var out []string
	for len(out) < n {
		raw, err := h.reg.Repositories(ctx, last, n)
		if err != nil {
			return nil, err
		}
		for _, repo := range raw {
			if h.mayPull(ctx, repo) && len(out) < n {
				out = append(out, repo)
			}
		}
		if len(raw) < n {
			break
		}
		last = raw[len(raw)-1]
	}
	return out, nil
}
