package api

import (
	"bytes"
	"context"
	"encoding/json"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/token"
	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/api/ui"
)

// Bounds of one status page render (GET /_meshreg/ui/), so that a page
// costs at most a few hundred metadata reads however big the registry is.
const (
	// uiReposPerPage is the repositories of a page without ?n=, and
	// uiMaxReposPerPage the most a page lists.
	uiReposPerPage    = 20
	uiMaxReposPerPage = 100
	// uiTagsPerRepo is the tags listed per repository (the rest are a
	// link to the tag list).
	uiTagsPerRepo = 10
	// uiIndexChildren is the manifests of an index read to size it.
	uiIndexChildren = 16
	// uiManifestReads is the manifests one render reads to compute sizes;
	// the tags past it show no size.
	uiManifestReads = 300
	// uiConcurrentRenders is how many pages are built at once; a request
	// beyond waits up to uiRenderWait, then gets 503.
	uiConcurrentRenders = 2
	uiRenderWait        = 10 * time.Second
	// uiRefresh is the default reload period in seconds; ?refresh=0
	// stops it, uiMaxRefresh bounds it.
	uiRefresh    = 5
	uiMaxRefresh = 3600
)

// statusPage serves the status page: the node's status document (the same
// as /_meshreg/v1/status) and a page of repositories with their first tags
// and sizes, as HTML with inline CSS and no script, loading nothing else.
//
// Access: the page shows a client what the API already shows it. The
// status document is open to every client, as /_meshreg/v1/status is; the
// repositories are those the client may pull, as in /v2/_catalog (all of
// them with authentication off). With authentication on, a browser sends
// credentials only once challenged: ?login=1 answers an anonymous client
// 401 with the challenge. Wrong credentials get 401 as on /v2/.
func (h *Handler) statusPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	last := q.Get("last")
	if last != "" {
		if err := validateName(last); err != nil {
			h.writeError(w, r, oci.Errorf(oci.Unsupported, "invalid last=%q: use a repository name (the next page link gives one)", truncate(last)).WithStatus(http.StatusBadRequest))
			return
		}
	}
	n, err := queryInt(q, "n", uiReposPerPage, 1, uiMaxReposPerPage)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	refresh, err := queryInt(q, "refresh", uiRefresh, 0, uiMaxRefresh)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	q.Set("refresh", strconv.Itoa(refresh))
	ctx := r.Context()
	p := ui.Page{First: last == "", Refresh: refresh}
	noCatalog := false
	if h.cfg.Auth != nil {
		id, err := h.authenticate(r)
		if err == nil && id.IsAnonymous() && id.Grant == nil && q.Get("login") == "1" {
			err = oci.Errorf(oci.Unauthorized, "log in to see the repositories you may pull")
		}
		if err != nil {
			h.uiUnauthorized(w, r, err)
			return
		}
		// As the catalog: a bearer token must grant it, and the list is
		// filtered by what the user may pull.
		noCatalog = id.Grant != nil && !id.Grant.Catalog()
		id = auth.Identity{User: id.User}
		ctx = context.WithValue(ctx, identityKey{}, id)
		p.Viewer, p.Filtered = id.String(), true
	}

	timer := time.NewTimer(uiRenderWait)
	defer timer.Stop()
	select {
	case h.pages <- struct{}{}:
		defer func() { <-h.pages }()
	case <-timer.C:
		w.Header().Set("Retry-After", "5")
		h.writeError(w, r, oci.Errorf(oci.Unavailable, "the node is building %d status pages already: retry in a few seconds", uiConcurrentRenders))
		return
	case <-ctx.Done():
		return
	}
	p.Now = time.Now()

	doc, err := json.Marshal(h.node.Status(ctx))
	if err == nil {
		p.Status, err = ui.DecodeStatus(doc)
	}
	if err != nil {
		p.StatusError = err.Error()
	}

	var names []string
	if noCatalog {
		p.ReposError = "the bearer token does not grant the catalog: ask the token service for scope registry:catalog:*, or log in with a password"
	} else if names, err = h.pullableRepositories(ctx, last, n+1); err != nil {
		p.ReposError = asOCIError(err).Error()
	}
	if len(names) > n {
		names = names[:n]
		p.Next = pageLink(q, "last", names[n-1])
	}
	p.FirstPage = pageLink(q, "last", "")
	budget := uiManifestReads
	for _, name := range names {
		p.Repos = append(p.Repos, h.uiRepo(ctx, name, &budget))
	}
	for _, repo := range p.Repos {
		for _, t := range repo.Tags {
			p.SizesCut = p.SizesCut || t.Size < 0 && t.Error == ""
		}
	}
	if p.Refresh > 0 {
		p.RefreshToggle = pageLink(q, "refresh", "0")
	} else {
		p.RefreshToggle = pageLink(q, "refresh", strconv.Itoa(uiRefresh))
	}

	var body bytes.Buffer
	if err := ui.Render(&body, p); err != nil {
		h.log.Error("the status page failed to render", "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", ui.ContentSecurityPolicy)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", itoa(int64(body.Len())))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body.Bytes())
	}
}

// uiUnauthorized answers 401 to a browser: a Basic challenge, which a
// browser answers with a login prompt (it cannot follow a Bearer one to the
// token service), and the reason as text.
func (h *Handler) uiUnauthorized(w http.ResponseWriter, r *http.Request, err error) {
	basic := &auth.Basic{}
	switch a := h.cfg.Auth.Authn.(type) {
	case *auth.Basic:
		basic = a
	case *token.Authenticator:
		if a.Basic != nil {
			basic = a.Basic
		}
	}
	h.log.Debug("status page: unauthorized", "client", clientAddr(r), "err", err)
	msg := asOCIError(err).Error() + "\nlog in with a user name and password of the node's --auth-htpasswd file\n"
	w.Header().Set("WWW-Authenticate", basic.Challenge())
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", itoa(int64(len(msg))))
	w.WriteHeader(http.StatusUnauthorized)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(msg))
	}
}

// queryInt reads an integer query parameter in [lo, hi] (def when absent).
func queryInt(q url.Values, key string, def, lo, hi int) (int, error) {
	if !q.Has(key) {
		return def, nil
	}
	v, err := strconv.Atoi(q.Get(key))
	if err != nil || v < lo || v > hi {
		return 0, oci.Errorf(oci.Unsupported, "invalid %s=%q: use an integer from %d to %d", key, truncate(q.Get(key)), lo, hi).WithStatus(http.StatusBadRequest)
	}
	return v, nil
}

// pageLink is the link to this page with key set to value ("" drops it);
// login is dropped, so following a link does not ask for credentials again.
func pageLink(q url.Values, key, value string) template.URL {
	next := url.Values{}
	for _, k := range []string{"n", "last", "refresh"} {
		if v := q.Get(k); v != "" {
			next.Set(k, v)
		}
	}
	next.Del(key)
	if value != "" {
		next.Set(key, value)
	}
	// Encode escapes every character that could leave the attribute.
	return template.URL("?" + next.Encode())
}

// uiRepo lists a repository's first tags with their sizes; each manifest
// read takes one from budget.
func (h *Handler) uiRepo(ctx context.Context, name string, budget *int) ui.Repo {
	repo := ui.Repo{Name: name}
	tags, err := h.reg.Tags(ctx, name, "", uiTagsPerRepo+1)
	if err != nil {
		repo.Error = "listing the tags failed: " + asOCIError(err).Error()
		return repo
	}
	if len(tags) > uiTagsPerRepo {
		tags, repo.MoreTags = tags[:uiTagsPerRepo], true
	}
	for _, tag := range tags {
		t := ui.Tag{Name: tag, Size: -1}
		if *budget <= 0 {
			repo.Tags = append(repo.Tags, t)
			continue
		}
		*budget--
		m, err := h.reg.GetManifest(ctx, name, tag)
		if err != nil {
			t.Error = "reading the manifest failed: " + asOCIError(err).Error()
		} else {
			t.Digest = m.Digest.String()
			t.Kind, t.Size = h.manifestSize(ctx, name, m, budget)
		}
		repo.Tags = append(repo.Tags, t)
	}
	return repo
}

// uiManifest is what manifestSize reads of a manifest or an index.
type uiManifest struct {
	ArtifactType string         `json:"artifactType"`
	Config       *uiDescriptor  `json:"config"`
	Layers       []uiDescriptor `json:"layers"`
	Manifests    []uiDescriptor `json:"manifests"`
}

type uiDescriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

// manifestSize says what m is and how many bytes it and the distinct blobs
// it names take (for an index: its manifests' too, each read once from
// budget); size -1 when the budget or uiIndexChildren cut it short.
func (h *Handler) manifestSize(ctx context.Context, repo string, m Manifest, budget *int) (kind string, size int64) {
	seen := map[digest.Digest]bool{}
	add := func(d digest.Digest, n int64) {
		if !seen[d] && n > 0 && size <= 1<<62-n {
			seen[d] = true
			size += n
		}
	}
	blobs := func(doc uiManifest) {
		if doc.Config != nil {
			add(doc.Config.Digest, doc.Config.Size)
		}
		for _, l := range doc.Layers {
			add(l.Digest, l.Size)
		}
	}
	var doc uiManifest
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return m.MediaType, int64(len(m.Body))
	}
	add(m.Digest, int64(len(m.Body)))
	if doc.Manifests == nil {
		blobs(doc)
		return manifestKind(doc), size
	}
	kind = "index of " + strconv.Itoa(len(doc.Manifests)) + " manifests"
	if len(doc.Manifests) > uiIndexChildren {
		return kind, -1
	}
	for _, c := range doc.Manifests {
		if seen[c.Digest] {
			continue
		}
		if *budget <= 0 {
			return kind, -1
		}
		*budget--
		child, err := h.reg.GetManifest(ctx, repo, c.Digest.String())
		if err != nil {
			return kind, -1
		}
		add(c.Digest, int64(len(child.Body)))
		var cd uiManifest
		if json.Unmarshal(child.Body, &cd) == nil {
			blobs(cd)
		}
	}
	return kind, size
}

// manifestKind names an image manifest: an image, or an artifact of its
// type.
func manifestKind(doc uiManifest) string {
	if doc.ArtifactType != "" {
		return "artifact " + doc.ArtifactType
	}
	if doc.Config == nil {
		return "manifest"
	}
	switch doc.Config.MediaType {
	case "application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json":
		return "image"
	}
	return "artifact " + doc.Config.MediaType
}
