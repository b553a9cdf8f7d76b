package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api/oci"
)

// Mirroring routes pulls to the upstream registries the cluster mirrors
// (docker.io, ghcr.io, 127.0.0.1:5999). The zero value mirrors nothing.
//
// Which upstream a request means:
//
//   - ?ns=REGISTRY on a GET or HEAD of a manifest or blob (what containerd
//     sends to a mirror host) names it;
//   - /v2/<ns>/<repo>/... names it in the path when <ns> is the namespace of
//     an upstream (MirrorNamespace: docker.io, 127.0.0.1-5999): a client
//     pulling node:5000/docker.io/library/nginx:1.27;
//   - otherwise a pull without ?ns= means Default (Docker's registry-mirrors
//     form: /v2/library/nginx/... is docker.io's), unless the cluster holds
//     the content itself; but a blob HEAD without ?ns= is the cluster's own
//     (a client pushing checks with it which blobs to upload).
//
// Content pushed to the cluster itself (under <repo>) is served first; the
// mirror's content lives under the repository MirrorRepository(ns, repo),
// where authorization applies: a policy glob such as docker.io/** governs
// who may pull what was fetched from docker.io. Nothing is ever fetched
// from a host that is not a configured upstream, writes never go to an
// upstream, and pushes into an upstream's namespace are refused.
type Mirroring struct {
	// Upstreams are the names of the configured upstreams.
	Upstreams []string
	// Default is the upstream a pull without ?ns= means ("": none).
	Default string
}

func (m Mirroring) configured(name string) bool { return slices.Contains(m.Upstreams, name) }

// byNamespace returns the upstream whose namespace is ns.
func (m Mirroring) byNamespace(ns string) (string, bool) {
	for _, u := range m.Upstreams {
		if MirrorNamespace(u) == ns {
			return u, true
		}
	}
	return "", false
}

// MirrorNamespace is the first path component of the repositories holding
// an upstream's content: its name in lower case, with the port's ":" (which
// a repository name may not hold) written "-": 127.0.0.1:5999 mirrors into
// 127.0.0.1-5999/...
func MirrorNamespace(upstream string) string {
	return strings.ReplaceAll(strings.ToLower(upstream), ":", "-")
}

// MirrorRepository is the repository holding repo of upstream: its
// namespace, then repo; a Docker Hub repository with no "/" is an official
// image, library/<repo>, as Docker names it.
func MirrorRepository(upstream, repo string) string {
	if upstream == "docker.io" && !strings.Contains(repo, "/") {
		repo = "library/" + repo
	}
	return MirrorNamespace(upstream) + "/" + repo
}

// LocalContent is an optional ability of a Registry that mirrors: whether
// the cluster holds a repository's manifest (tag or digest) or blob, from
// local state, without asking the network. A pull of content the cluster
// holds is served from it, not from an upstream.
type LocalContent interface {
	HasManifest(repo, reference string) bool
	HasBlob(repo string, d digest.Digest) bool
}

// routeMirror decides whose content a request is (see Mirroring): it
// returns the route with its repository replaced by the mirror's when the
// request is the mirror's, and refuses writes through a mirror or into an
// upstream's namespace.
func (h *Handler) routeMirror(r *http.Request, rt route) (route, error) {
	m := h.cfg.Mirror
	ns := r.URL.Query().Get("ns")
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	switch rt.kind {
	case routeBase, routeCatalog:
		return rt, nil
	case routeManifest, routeBlob:
	default:
		if !read {
			return rt, h.refuseMirrorWrite(r, rt, ns)
		}
		if ns != "" && m.configured(ns) {
			rt.name = MirrorRepository(ns, rt.name) // tags and referrers of the mirror's repository
		}
		return rt, validateName(rt.name)
	}
	if !read {
		return rt, h.refuseMirrorWrite(r, rt, ns)
	}
	if ns == "" {
		if first, _, ok := strings.Cut(rt.name, "/"); ok {
			if _, ok := m.byNamespace(first); ok {
				return rt, nil // the explicit form: the mirror's repository itself
			}
		}
	}
	upstream := ns
	if upstream == "" && (r.Method == http.MethodGet || rt.kind == routeManifest) {
		upstream = m.Default
	}
	if upstream == "" || h.holdsLocally(rt) {
		return rt, nil
	}
	if !m.configured(upstream) {
		return rt, oci.Errorf(oci.NameUnknown, "repository %s is not in this registry, and ns=%q names no upstream it mirrors (configured: %s)",
			truncate(rt.name), truncate(upstream), upstreamList(m.Upstreams))
	}
	rt.name = MirrorRepository(upstream, rt.name)
	if err := validateName(rt.name); err != nil {
		return rt, err
	}
	return rt, nil
}

// refuseMirrorWrite refuses a write with ?ns= (a mirror is read-only) or
// into a repository under an upstream's namespace (that is the mirror's
// content), and lets every other request through.
func (h *Handler) refuseMirrorWrite(r *http.Request, rt route, ns string) error {
	if ns != "" {
		return oci.Errorf(oci.Unsupported, "%s with ?ns=%s: a mirror is read-only; push to the registry itself, without ns", r.Method, truncate(ns))
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	if first, _, ok := strings.Cut(rt.name, "/"); ok {
		if u, ok := h.cfg.Mirror.byNamespace(first); ok {
			return oci.Errorf(oci.Denied, "repository %s is the mirror of upstream %s: its content comes from there; push under another name", truncate(rt.name), u)
		}
	}
	return nil
}

// holdsLocally reports whether the cluster itself holds what rt asks for.
func (h *Handler) holdsLocally(rt route) bool {
	lc, ok := h.reg.(LocalContent)
	if !ok {
		return false
	}
	if rt.kind == routeBlob {
		d, err := digest.Parse(rt.ref)
		return err == nil && lc.HasBlob(rt.name, d)
	}
	return lc.HasManifest(rt.name, rt.ref)
}

func upstreamList(names []string) string {
	if len(names) == 0 {
		return "none; see --upstream"
	}
	return strings.Join(names, ", ")
}
