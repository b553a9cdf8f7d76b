package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/meshreg/meshreg/api/oci"
)

// GarbageCollector is an optional ability of a Node: a cluster-wide,
// online garbage collection started on demand (POST /_meshreg/v1/gc,
// `meshreg gc`).
type GarbageCollector interface {
	// CollectGarbage runs one collection and returns its result; progress
	// hears of each step. An error wrapping ErrGCUnavailable means this
	// node cannot collect now (no leader, another run in progress).
	CollectGarbage(ctx context.Context, req GCRequest, progress func(msg string)) (GCResult, error)
}

// ErrGCUnavailable marks a collection that cannot start now; the client
// may retry.
var ErrGCUnavailable = errors.New("garbage collection unavailable")

// GCRequest is what a client asks of a collection.
type GCRequest struct {
	// Grace keeps blobs linked less than this long ago.
	Grace time.Duration
	// DryRun lists what would go without changing anything.
	DryRun bool
}

// GCResult is the outcome of one collection.
type GCResult struct {
	MarkIndex uint64 `json:"markIndex"`
	DryRun    bool   `json:"dryRun"`
	Grace     string `json:"grace"`
	Manifests int    `json:"manifests"`
	Links     int    `json:"links"`
	// Blobs and Bytes are what the mark found unreferenced (and, unless a
	// dry run, proposed to free); Kept what it kept although unreferenced.
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	Kept  int   `json:"kept"`
	// Candidates lists them (at most MaxGCCandidatesListed) on a dry run.
	Candidates []GCCandidate `json:"candidates,omitempty"`
	// Retention is what the content policy's retention deleted before
	// the mark (on a dry run: would delete), at most
	// MaxRetentionPerCollection; RetentionSkipped counts deletions that
	// failed (a write raced them) and are left to the next collection.
	Retention        []RetentionDeletion `json:"retention,omitempty"`
	RetentionSkipped int                 `json:"retentionSkipped,omitempty"`
	// Nodes is what each member, and each follower of the metadata its
	// member could ask, freed on its disk.
	Nodes    []GCNodeReport `json:"nodes,omitempty"`
	Duration string         `json:"duration"`
}

// RetentionDeletion is a tag, or (Tag "") an untagged manifest, that
// retention deletes, with the rule's reason.
type RetentionDeletion struct {
	Repo   string `json:"repository"`
	Tag    string `json:"tag,omitempty"`
	Digest string `json:"digest"`
	Reason string `json:"reason"`
}

// MaxRetentionPerCollection bounds the deletions retention makes in one
// collection; the next collection goes on.
const MaxRetentionPerCollection = 10000

// MaxGCCandidatesListed bounds the candidates a dry run lists.
const MaxGCCandidatesListed = 1000

// GCCandidate is a blob a collection would free.
type GCCandidate struct {
	Digest string   `json:"digest"`
	Size   int64    `json:"size"`
	Repos  []string `json:"repositories"`
}

// GCNodeReport is what one node freed: collected blobs and leftovers
// (files nothing links or references), and collected blobs it kept (in
// use, or written since the collection began). Error says why a node did
// not report. Role is "member" or "follower" (a follower of the metadata,
// asked through Via, the member it tails from).
type GCNodeReport struct {
	Node          string `json:"node"`
	Role          string `json:"role,omitempty"`
	Via           string `json:"via,omitempty"`
	Blobs         int    `json:"blobs"`
	Bytes         int64  `json:"bytes"`
	LeftoverBlobs int    `json:"leftoverBlobs"`
	LeftoverBytes int64  `json:"leftoverBytes"`
	Kept          int    `json:"kept"`
	Error         string `json:"error,omitempty"`
}

// GCLine is one line of the answer to POST /_meshreg/v1/gc, which streams
// newline-delimited JSON: progress lines, then one line with the result
// or the error.
type GCLine struct {
	Progress string    `json:"progress,omitempty"`
	Result   *GCResult `json:"result,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// maxGCGrace bounds the grace a client may ask for.
const maxGCGrace = 365 * 24 * time.Hour

// collectGarbage serves POST /_meshreg/v1/gc[?grace=D][&dry_run=1]. The
// answer streams progress lines as the collection goes, so a client sees
// it is alive; the request ends when every member reported (bounded by
// the node).
func (h *Handler) collectGarbage(w http.ResponseWriter, r *http.Request) {
	gcr, ok := h.node.(GarbageCollector)
	if !ok {
		h.writeError(w, r, oci.Errorf(oci.Unsupported, "this node does not collect garbage").WithStatus(http.StatusNotFound))
		return
	}
	req := GCRequest{Grace: time.Hour}
	q := r.URL.Query()
	if s := q.Get("grace"); s != "" {
		g, err := time.ParseDuration(s)
		if err != nil || g < 0 || g > maxGCGrace {
			h.writeError(w, r, oci.Errorf(oci.Unsupported, "grace %q is not a duration between 0s and %s (e.g. 0s, 30m, 1h)", truncate(s), maxGCGrace).WithStatus(http.StatusBadRequest))
			return
		}
		req.Grace = g
	}
	switch q.Get("dry_run") {
	case "", "0", "false":
	case "1", "true":
		req.DryRun = true
	default:
		h.writeError(w, r, oci.Errorf(oci.Unsupported, "dry_run must be 1 or 0").WithStatus(http.StatusBadRequest))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	line := func(l GCLine) {
		_ = enc.Encode(l)
		_ = rc.Flush()
	}
	res, err := gcr.CollectGarbage(r.Context(), req, func(msg string) { line(GCLine{Progress: msg}) })
	if err != nil {
		line(GCLine{Error: err.Error()})
		return
	}
	line(GCLine{Result: &res})
}
