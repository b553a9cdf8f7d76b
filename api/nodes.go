package api

import (
	"context"
	"net/http"

	"github.com/meshreg/meshreg/api/oci"
)

// FleetViewer is an optional ability of a Node: it lists every node of
// the cluster, the members and the followers of the metadata each member
// serves (GET /_meshreg/v1/nodes, `meshreg cluster nodes`).
type FleetViewer interface {
	// Nodes returns the JSON document of the fleet; an error when even the
	// members cannot be read (a member that cannot be asked is listed in
	// the document as unreachable, not an error).
	Nodes(ctx context.Context) (any, error)
}

// nodes serves GET /_meshreg/v1/nodes (admin: it names every node and
// where it runs).
func (h *Handler) nodes(w http.ResponseWriter, r *http.Request) {
	fv, ok := h.node.(FleetViewer)
	if !ok {
		h.writeError(w, r, oci.Errorf(oci.Unsupported, "this node does not list the cluster's nodes").WithStatus(http.StatusNotFound))
		return
	}
	doc, err := fv.Nodes(r.Context())
	if err != nil {
		h.writeError(w, r, oci.Errorf(oci.Unavailable, "listing the cluster's nodes: %v", err))
		return
	}
	writeJSON(w, r, http.StatusOK, "application/json", doc)
}
