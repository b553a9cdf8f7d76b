package policy

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// TagInfo is a tag as retention sees it.
type TagInfo struct {
	Tag    string
	Digest digest.Digest
	// Index is the Raft index of the tag's latest push; Time the pushing
	// node's clock then (zero: pushed before the registry recorded it,
	// so its age is unknown and no age deletes it).
	Index uint64
	Time  time.Time
}

// ManifestInfo is a manifest as retention sees it.
type ManifestInfo struct {
	Digest digest.Digest
	// Time is when it was last pushed (zero: unknown).
	Time time.Time
	// Tagged: a tag points at it. Referenced: it is a referrer (has a
	// subject) or another manifest of the repository lists it (an index's
	// child); retention never deletes those on its own.
	Tagged, Referenced bool
}

// Deletion is something retention deletes: a tag, or (Tag "") an
// untagged manifest.
type Deletion struct {
	Repo   string        `json:"repository"`
	Tag    string        `json:"tag,omitempty"`
	Digest digest.Digest `json:"digest"`
	Reason string        `json:"reason"`
}

// Select returns what r's retention deletes from repo at now: tags of the
// set beyond the KeepLast most recently pushed (by Raft index, then name),
// tags of the set older than DeleteTagsAfter, and manifests neither tagged
// nor referenced older than DeleteUntaggedAfter. Immutable tags (of the
// same rule) are never deleted. The result is in a stable order: tags by
// push, then manifests by digest.
func (r *Rule) Select(repo string, tags []TagInfo, manifests []ManifestInfo, now time.Time) []Deletion {
	if r == nil || r.Retention == nil {
		return nil
	}
	ret := r.Retention
	var set []TagInfo
	for _, t := range tags {
		if ret.Match(t.Tag) && !r.Immutable.Match(t.Tag) {
			set = append(set, t)
		}
	}
	// Newest first.
	slices.SortFunc(set, func(a, b TagInfo) int {
		if c := cmp.Compare(b.Index, a.Index); c != 0 {
			return c
		}
		return cmp.Compare(a.Tag, b.Tag)
	})
	var out []Deletion
	for i, t := range set {
		switch {
		case ret.KeepLast > 0 && i >= ret.KeepLast:
			out = append(out, Deletion{Repo: repo, Tag: t.Tag, Digest: t.Digest,
				Reason: fmt.Sprintf("policy rule %d keeps the last %d tags", r.N, ret.KeepLast)})
		case ret.DeleteTagsAfter > 0 && !t.Time.IsZero() && now.Sub(t.Time) > ret.DeleteTagsAfter:
			out = append(out, Deletion{Repo: repo, Tag: t.Tag, Digest: t.Digest,
				Reason: fmt.Sprintf("policy rule %d deletes tags after %s", r.N, ret.DeleteTagsAfter)})
		}
	}
	if ret.DeleteUntaggedAfter > 0 {
		ms := slices.Clone(manifests)
		slices.SortFunc(ms, func(a, b ManifestInfo) int { return cmp.Compare(a.Digest, b.Digest) })
		for _, m := range ms {
			if !m.Tagged && !m.Referenced && !m.Time.IsZero() && now.Sub(m.Time) > ret.DeleteUntaggedAfter {
				out = append(out, Deletion{Repo: repo, Digest: m.Digest,
					Reason: fmt.Sprintf("policy rule %d deletes untagged manifests after %s", r.N, ret.DeleteUntaggedAfter)})
			}
		}
	}
	return out
}
