package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/node/fetch"
	"github.com/meshreg/meshreg/node/manifest"
	"github.com/meshreg/meshreg/node/mirror"
)

// The node's side of the pull-through mirror (package mirror): the
// replicated state it reads and writes (mirrorStore), the reads of
// mirrored repositories (<ns>/<repo>), the revalidation of a tag on the
// Raft leader for the whole cluster (mirrorProtocol), and the upstream as
// the origin of blobs no peer holds (originSource).

// mirrorProtocol asks the Raft leader to revalidate a mirrored tag for the
// cluster: the request is a mirrorRequest, the answer a mirrorResult. The
// leader shares concurrent requests for one tag (one HEAD upstream) and
// answers once its answer is applied; the asker waits to apply as far.
const mirrorProtocol = "/meshreg/mirror-resolve/1.0.0"

type mirrorRequest struct {
	Upstream string `json:"upstream"`
	Repo     string `json:"repo"`
	Tag      string `json:"tag"`
}

type mirrorResult struct {
	// Kind is how the upstream failed: not_found, unauthorized,
	// unavailable, other; "" on success.
	Kind  string `json:"kind,omitempty"`
	Msg   string `json:"msg,omitempty"`
	Index uint64 `json:"index,omitempty"`
}

// mirrorMeta is the metadata store's ability to record mirrored tags
// (consensus.Store has it; a fake may not, and then the node mirrors
// nothing).
type mirrorMeta interface {
	MirrorTag(repo, tag string) (consensus.MirrorTag, error)
	PutMirrorTag(ctx context.Context, repo, tag string, rec consensus.MirrorTag) error
}

var _ mirrorMeta = (*consensus.Store)(nil)

// openMirror builds the node's mirror of cfg.Mirror with a client per
// upstream; nil when no upstream is configured.
func (n *Node) openMirror(clients map[string]mirror.Upstream, classify func(error) error) (*mirror.Mirror, error) {
	if len(n.cfg.Mirror.Upstreams) == 0 {
		return nil, nil
	}
	if _, ok := n.meta.(mirrorMeta); !ok {
		return nil, errors.New("node: the metadata store cannot record mirrored tags")
	}
	return mirror.New(n.cfg.Mirror, mirror.Options{
		Clients: clients, Store: mirrorStore{n}, Revalidate: n.revalidateOnLeader, Classify: classify,
		MaxManifest: consensusMaxManifest, Metrics: n.metrics.mirror, Log: n.log.With("component", "mirror"), Context: n.ctx,
	})
}

// consensusMaxManifest is the largest manifest a Raft write carries.
const consensusMaxManifest = 4 << 20

// maxMirrorBlobs bounds the blobs (config and layers) of a manifest the
// mirror stores: far above real images (a few dozen layers), it keeps an
// upstream from making the cluster commit thousands of links for one pull.
const maxMirrorBlobs = 1000

// mirrorStore is the replicated state as the mirror uses it.
type mirrorStore struct{ n *Node }

func (s mirrorStore) MirrorTag(repo, tag string) (consensus.MirrorTag, error) {
	return s.n.meta.(mirrorMeta).MirrorTag(repo, tag)
}

// PutMirrorTag records the tag with the media type and size of the
// manifest as stored (parsed from its bytes), not as the upstream's HEAD
// said (a Content-Type with parameters, say).
func (s mirrorStore) PutMirrorTag(ctx context.Context, repo, tag string, rec consensus.MirrorTag) error {
	if m, err := s.n.meta.Manifest(repo, rec.Digest); err == nil {
		rec.MediaType, rec.Size = m.MediaType, int64(len(m.Body))
	}
	// A member of an older release could not apply it (features.go).
	if err := s.n.membersApply(state.OpPutMirrorTag); err != nil {
		return fmt.Errorf("recording a mirrored tag: %w", err)
	}
	return s.n.meta.(mirrorMeta).PutMirrorTag(ctx, repo, tag, rec)
}

func (s mirrorStore) HasManifest(repo string, d digest.Digest) bool {
	_, err := s.n.meta.Manifest(repo, d)
	return err == nil
}

// StoreManifest stores a manifest fetched from an upstream: through the
// same Raft write as a push, but without requiring the blobs and child
// manifests it names (mirrored content arrives when asked for), and with
// its blobs linked to the repository so that they may be pulled from it.
func (s mirrorStore) StoreManifest(ctx context.Context, repo string, d digest.Digest, mediaType string, body []byte) error {
	n := s.n
	p, err := manifest.Parse(mediaType, body)
	if err != nil {
		return manifestError(err)
	}
	if len(p.Blobs) > maxMirrorBlobs {
		return fmt.Errorf("manifest %s names %d blobs: a mirrored manifest may name at most %d (each is linked through Raft)", d, len(p.Blobs), maxMirrorBlobs)
	}
	rec := consensus.ManifestRecord{Repo: repo, Digest: d, MediaType: p.MediaType, Body: body,
		ArtifactType: p.ArtifactType, Annotations: p.Annotations,
		// The blobs are linked below, after this index: a garbage
		// collection that freed one before it does not fail the put
		// (consensus/state/gc.go); one that frees one after it does.
		CheckIndex: n.meta.AppliedIndex()}
	if p.Subject != nil {
		rec.Subject = p.Subject.Digest
	}
	for _, b := range p.Blobs {
		if size, err := n.meta.BlobLink(repo, b.Digest); err == nil && size == b.Size {
			continue
		}
		if err := n.meta.LinkBlob(ctx, repo, b.Digest, b.Size); err != nil {
			return fmt.Errorf("linking blob %s to %s: %w", b.Digest, repo, err)
		}
	}
	return n.meta.PutManifest(ctx, rec)
}

// revalidateOnLeader has the Raft leader revalidate a tag for the whole
// cluster (it runs mirror.Revalidate, which shares concurrent requests),
// and returns once this node applied the answer.
func (n *Node) revalidateOnLeader(ctx context.Context, upstream, repo, tag string) error {
	st := n.meta.Status()
	if st.State == consensus.Leader {
		return n.mirror.Revalidate(ctx, upstream, repo, tag)
	}
	if st.LeaderID == "" {
		return fmt.Errorf("no Raft leader to revalidate the tag: %w", consensus.ErrNotLeader)
	}
	id, err := peerOf(n.host, consensus.Server{ID: st.LeaderID, Address: st.LeaderAddress})
	if err != nil {
		return err
	}
	req, _ := json.Marshal(mirrorRequest{Upstream: upstream, Repo: repo, Tag: tag})
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := n.host.Request(rctx, id, mirrorProtocol, req, maxControlLen)
	if err != nil {
		return fmt.Errorf("asking leader %s to revalidate %s:%s: %w", id, repo, tag, err)
	}
	var res mirrorResult
	if err := json.Unmarshal(resp, &res); err != nil {
		return fmt.Errorf("leader %s: bad answer to a revalidation: %w", id, err)
	}
	if res.Kind != "" {
		return &leaderMirrorError{kind: res.Kind, msg: res.Msg}
	}
	return n.meta.WaitApplied(rctx, res.Index)
}

// leaderMirrorError is the leader's revalidation failure as a follower
// rebuilds it: the kind matches mirror's sentinels.
type leaderMirrorError struct{ kind, msg string }

func (e *leaderMirrorError) Error() string { return e.msg }

func (e *leaderMirrorError) Unwrap() error {
	switch e.kind {
	case "not_found":
		return mirror.ErrNotFound
	case "unauthorized":
		return mirror.ErrUnauthorized
	case "unavailable":
		return mirror.ErrUnavailable
	}
	return nil
}

// serveMirror is the leader's side of mirrorProtocol. The asker is a
// member (the gate lets no one else open it); what it names is checked
// here: a configured upstream, a valid repository and tag.
func (n *Node) serveMirror(ctx context.Context, from peer.ID, b []byte) []byte {
	var req mirrorRequest
	res := mirrorResult{}
	answer := func() []byte { out, _ := json.Marshal(res); return out }
	if err := json.Unmarshal(b, &req); err != nil {
		res.Kind, res.Msg = "other", "bad revalidation request"
		return answer()
	}
	switch {
	case n.mirror == nil:
		res.Kind, res.Msg = "other", "this node mirrors no upstream"
	case !validMirrorRequest(req):
		res.Kind, res.Msg = "other", "invalid repository or tag"
	case n.meta.Status().State != consensus.Leader:
		res.Kind, res.Msg = "other", "not the leader"
	}
	if res.Kind != "" {
		return answer()
	}
	err := n.mirror.Revalidate(ctx, req.Upstream, req.Repo, req.Tag)
	if err != nil {
		res.Kind, res.Msg = mirrorErrorKind(n.mirror.Kind(err)), err.Error()
		return answer()
	}
	res.Index = n.meta.AppliedIndex()
	return answer()
}

func validMirrorRequest(r mirrorRequest) bool {
	return len(r.Upstream) <= 259 && len(r.Repo) <= 255 && len(r.Tag) <= 128 &&
		api.ValidName(r.Repo) && api.ValidTag(r.Tag)
}

func mirrorErrorKind(kind error) string {
	err := kind
	switch {
	case errors.Is(err, mirror.ErrNotFound):
		return "not_found"
	case errors.Is(err, mirror.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, mirror.ErrUnavailable):
		return "unavailable"
	}
	return "other"
}

// mirrorManifest serves a manifest of a mirrored repository: a tag is
// answered by the mirror (fresh, revalidated or stale), a digest from the
// state or, when absent, from the upstream.
func (n *Node) mirrorManifest(ctx context.Context, internal, upstream, repo, reference string) (api.Manifest, error) {
	var (
		d       digest.Digest
		warning string
	)
	if manifest.IsDigest(reference) {
		d = digest.Digest(reference)
		if err := n.mirror.Manifest(ctx, upstream, repo, d); err != nil {
			return api.Manifest{}, err
		}
	} else {
		a, err := n.mirror.Tag(ctx, upstream, repo, reference)
		if err != nil {
			return api.Manifest{}, err
		}
		d, warning = a.Digest, a.Warning
	}
	m, err := n.meta.Manifest(internal, d)
	if err != nil {
		return api.Manifest{}, metaError(err, oci.ManifestUnknown, "manifest "+d.String()+" of "+internal+" is not stored yet: retry")
	}
	return api.Manifest{Digest: m.Digest, MediaType: m.MediaType, Body: m.Body, Warning: warning}, nil
}

// HasManifest reports whether repo holds the manifest (tag or digest) in
// this node's state (api.LocalContent: pushed content is served first).
func (n *Node) HasManifest(repo, reference string) bool {
	d := digest.Digest(reference)
	if !manifest.IsDigest(reference) {
		var err error
		if d, err = n.meta.ResolveTag(repo, reference); err != nil {
			return false
		}
	}
	_, err := n.meta.Manifest(repo, d)
	return err == nil
}

// HasBlob reports whether blob d is linked to repo in this node's state.
func (n *Node) HasBlob(repo string, d digest.Digest) bool {
	_, err := n.meta.BlobLink(repo, d)
	return err == nil
}

var _ api.LocalContent = (*Node)(nil)

// mirrorOrigins are the node's upstreams as the origins of blobs
// (fetch.Origins, Config.Origins): by upstream name; one member per region
// fetches from an upstream with region-fetch, or from every upstream with
// --upstream-fetch region.
type mirrorOrigins struct{ n *Node }

var _ fetch.RegionalOrigins = mirrorOrigins{}

func (o mirrorOrigins) Origin(name string) (fetch.OriginFunc, bool) { return o.n.mirror.Origin(name) }

func (o mirrorOrigins) FetchPerRegion(name string) bool {
	return o.n.mirror.FetchPerRegion(name) || o.n.cfg.OriginFetchPerRegion
}

// mirrorStatus is the upstreams in the status document.
func (n *Node) mirrorStatus() []mirror.Status {
	if n.mirror == nil {
		return nil
	}
	return n.mirror.Statuses()
}
