package api

import "strings"

// route is one parsed /v2/ path.
type route struct {
	kind routeKind
	name string // repository
	ref  string // manifest reference, blob digest, upload id or referrers subject
}

type routeKind int

const (
	routeUnknown routeKind = iota
	routeBase
	routeCatalog
	routeManifest
	routeBlob
	routeUploads // POST /v2/<name>/blobs/uploads/
	routeUpload  // /v2/<name>/blobs/uploads/<id>
	routeTags
	routeReferrers
)

func (k routeKind) String() string {
	return [...]string{"unknown", "base", "catalog", "manifest", "blob", "uploads", "upload", "tags", "referrers"}[k]
}

// parseRoute splits a /v2/ path into its route. Repository names contain
// slashes, so the path is read from its end, where the fixed parts are.
func parseRoute(path string) route {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		if path == "/v2" {
			return route{kind: routeBase}
		}
		return route{}
	}
	if rest == "" {
		return route{kind: routeBase}
	}
	if rest == "_catalog" {
		return route{kind: routeCatalog}
	}
	if name, ok := strings.CutSuffix(rest, "/tags/list"); ok {
		return route{kind: routeTags, name: name}
	}
	if name, ok := strings.CutSuffix(rest, "/blobs/uploads/"); ok {
		return route{kind: routeUploads, name: name}
	}
	if name, ok := strings.CutSuffix(rest, "/blobs/uploads"); ok {
		return route{kind: routeUploads, name: name}
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return route{}
	}
	head, last := rest[:i], rest[i+1:]
	j := strings.LastIndexByte(head, '/')
	if j < 0 {
		return route{}
	}
	name, verb := head[:j], head[j+1:]
	switch verb {
	case "manifests":
		return route{kind: routeManifest, name: name, ref: last}
	case "referrers":
		return route{kind: routeReferrers, name: name, ref: last}
	case "blobs":
		return route{kind: routeBlob, name: name, ref: last}
	case "uploads":
		if n, ok := strings.CutSuffix(name, "/blobs"); ok {
			return route{kind: routeUpload, name: n, ref: last}
		}
	}
	return route{}
}
