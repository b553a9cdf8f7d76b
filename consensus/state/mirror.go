package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// MirrorTag is what the state knows of a tag of a mirrored repository (a
// repository <ns>/<repo> holding content of the upstream registry named
// Upstream): the manifest the upstream answered for it, and when that was
// asked (by the proposer's clock). Every node serves Digest from it while
// CheckedAt is younger than the upstream's revalidation interval.
type MirrorTag struct {
	Upstream  string        `json:"upstream"`
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	Size      int64         `json:"size"`
	CheckedAt time.Time     `json:"checkedAt"`
}

// Bounds of a mirrored tag.
var (
	// minCheckedAt and maxCheckedAt bound the check time a proposer may
	// record: a clock before 2000 or after 2200 is broken, not a time.
	minCheckedAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	maxCheckedAt = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	// upstreamRE is a registry host with an optional port, as clients name
	// one (docker.io, registry.k8s.io, 127.0.0.1:5999).
	upstreamRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$`)
)

// maxUpstreamLength bounds an upstream's name (a DNS name and a port).
const maxUpstreamLength = 253 + 6

// checkMirrorTag validates an OpPutMirrorTag: a valid repository, tag,
// digest, manifest media type and size, a registry host as the upstream,
// and a check time within the bounds above; nothing else.
func (c Command) checkMirrorTag() error {
	if err := checkRepoDigest(c.Repo, c.Digest); err != nil {
		return err
	}
	if err := checkTag(c.Tag); err != nil {
		return err
	}
	switch {
	case len(c.Upstream) > maxUpstreamLength || !upstreamRE.MatchString(c.Upstream):
		return fmt.Errorf("upstream %q is not a registry host[:port]", truncate(c.Upstream))
	case !strings.Contains(c.Repo, "/"):
		return fmt.Errorf("mirrored repository %q has no namespace: it is <upstream>/<repository>", truncate(c.Repo))
	case c.CheckedAt < minCheckedAt || c.CheckedAt > maxCheckedAt:
		return fmt.Errorf("check time %d (unix ns) is outside the years 2000 to 2200: the proposer's clock is wrong", c.CheckedAt)
	case c.Size < 0 || c.Size > MaxManifestBytes:
		return fmt.Errorf("manifest size %d is outside 0..%d bytes", c.Size, MaxManifestBytes)
	case !manifestMediaTypes[c.MediaType]:
		return fmt.Errorf("manifest media type %q is not a manifest type this registry stores", truncate(c.MediaType))
	case c.Name != "" || c.CheckIndex != 0 || c.Time != 0 || c.carriesSweep() || len(c.Tags) > 0 || c.ArtifactType != "" || c.Subject != "" || len(c.Annotations) > 0 || len(c.Body) > 0:
		return fmt.Errorf("a mirrored tag carries only an upstream, a repository, a tag, a digest, a media type, a size and a check time")
	}
	return nil
}

// putMirrorTag records a mirrored tag and points the repository's tag at
// its manifest, which must be in the repository already (the mirror
// stores it first): otherwise the command fails with ErrNotFound, the same
// on every node.
func (t tx) putMirrorTag(c Command) (resp, err error) {
	_, ok, err := t.get(ManifestKey(c.Repo, c.Digest))
	if err != nil {
		return nil, err
	}
	if !ok {
		return fmt.Errorf("consensus: manifest %s of mirrored tag %s is not in repository %s: %w", c.Digest, c.Tag, c.Repo, ErrNotFound), nil
	}
	rec := MirrorTag{Upstream: c.Upstream, Digest: c.Digest, MediaType: c.MediaType, Size: c.Size,
		CheckedAt: time.Unix(0, c.CheckedAt).UTC()}
	if err := t.setJSON(mirrorTagKey(c.Repo, c.Tag), rec); err != nil {
		return nil, err
	}
	return nil, t.setTag(c.Repo, c.Tag, c.Digest)
}

// MirrorTag returns the record of a mirrored tag; ErrNotFound when there is
// none, or when its manifest was deleted since.
func (r Reader) MirrorTag(repo, tag string) (MirrorTag, error) {
	notFound := fmt.Errorf("consensus: mirrored tag %s of repository %s: %w", tag, repo, ErrNotFound)
	if !validName(repo) || !validName(tag) {
		return MirrorTag{}, notFound
	}
	v, ok, err := r.t.get(mirrorTagKey(repo, tag))
	if err != nil || !ok {
		return MirrorTag{}, errors.Join(err, notFound)
	}
	var rec MirrorTag
	if err := json.Unmarshal(v, &rec); err != nil {
		return MirrorTag{}, fmt.Errorf("consensus: decoding mirrored tag %s of %s: %w", tag, repo, err)
	}
	if _, ok, err := r.t.get(ManifestKey(repo, rec.Digest)); err != nil || !ok {
		return MirrorTag{}, errors.Join(err, notFound)
	}
	return rec, nil
}
