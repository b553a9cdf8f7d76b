package state

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/consensus/state/policy"
)

// The content policy (package policy) is the setting SettingPolicy. Apply
// enforces it on the writes it governs, from the state alone, so that two
// nodes racing writes agree on which one it refuses:
//
//   - immutable tags: a put that would move one to another digest, a tag
//     delete of one, and a manifest delete of a manifest one points at are
//     refused (the same digest again is fine);
//   - quotas: a put of a manifest new to its repository is refused if the
//     repository's usage plus what the manifest adds exceeds the quota.
//
// A repository's usage counts its manifests' bodies and each distinct blob
// (config, layer) its manifests reference once, at its linked size: a
// blob two manifests share counts once, and leaves the usage with the last
// manifest that references it. Blobs linked but referenced by no manifest
// (an upload not yet followed by its manifest) do not count. The usage is
// kept for every repository at apply (u<repo>, q<repo>·<digest>), whether a
// quota governs it or not, from the first policy write on: manifests put
// before the cluster ever stored a policy are not counted (their record
// says so: manifestMeta.Counted). That keeps every node's usage equal
// across a rolling upgrade: a release without this accounting applies
// puts alike until the policy, which every member must apply before it is
// written (node/features.go), turns it on for all of them at one index.
//
// Retention (View.Retention) reads the tags' push index and time
// (p<repo>·<tag>) and the manifests' last push.

// ErrPolicyDenied: the content policy refuses the write (an immutable tag,
// a quota); the message says which rule and what to do.
var ErrPolicyDenied = errors.New("refused by the content policy")

func tagPushKey(repo, tag string) []byte              { return key(prefixTagPush, repo, tag) }
func usageKey(repo string) []byte                     { return key(prefixUsage, repo) }
func usedBlobKey(repo string, d digest.Digest) []byte { return key(prefixUsedBlob, repo, string(d)) }

// PolicyCache keeps the last policy parsed, by its bytes: parsing is a
// pure function of them, so a hit gives what parsing again would, and
// apply pays for the YAML once per policy write instead of once per put.
// Safe for concurrent use; the zero value is ready, and a nil cache parses
// every time.
type PolicyCache struct {
	mu   sync.Mutex
	body []byte
	p    *policy.Policy
	err  error
}

func (c *PolicyCache) parse(b []byte) (*policy.Policy, error) {
	if c == nil {
		return policy.Parse(b)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.body == nil || !bytes.Equal(c.body, b) {
		c.body = bytes.Clone(b)
		c.p, c.err = policy.Parse(b)
	}
	return c.p, c.err
}

// policy returns the stored policy, nil if none. A body that does not
// parse (it was validated when written, so only a newer release's would
// not) is no policy, the same on every node of this release. The parsed
// policy is shared through the cache: callers must not change it.
func (t tx) policy(cache *PolicyCache) (*policy.Policy, error) {
	b, ok, err := t.get(settingKey(SettingPolicy))
	if err != nil || !ok {
		return nil, err
	}
	p, perr := cache.parse(b)
	if perr != nil {
		return nil, nil
	}
	return p, nil
}

// policyError is a refusal: its message is what the client reads.
type policyError struct{ msg string }

func (e *policyError) Error() string { return e.msg }
func (e *policyError) Unwrap() error { return ErrPolicyDenied }

func denied(format string, args ...any) error {
	return &policyError{fmt.Sprintf(format, args...)}
}

// checkPolicy returns the policy's refusal of c (resp), nil if it allows
// it. It only reads.
func (t tx) checkPolicy(c Command, cache *PolicyCache) (resp, err error) {
	if c.Op != OpPutManifest && c.Op != OpDeleteTag && c.Op != OpDeleteManifest {
		return nil, nil
	}
	p, err := t.policy(cache)
	if err != nil || p == nil {
		return nil, err
	}
	switch c.Op {
	case OpPutManifest:
		for _, tag := range c.Tags {
			old, ok, err := t.get(TagKey(c.Repo, tag))
			if err != nil {
				return nil, err
			}
			if r := p.Immutable(c.Repo, tag); ok && digest.Digest(old) != c.Digest && r != nil {
				return denied("tag %s of %s is immutable (policy rule %d): it points at %s and cannot move to %s; push a new tag",
					tag, c.Repo, r.N, old, c.Digest), nil
			}
		}
		if r := p.Quota(c.Repo); r != nil {
			add, _, err := t.usageAdded(c)
			if err != nil {
				return nil, err
			}
			used, err := t.usage(c.Repo)
			if err != nil {
				return nil, err
			}
			if add > 0 && used+add > r.Quota {
				return denied("repository %s is over its quota with this manifest: it holds %d bytes, the manifest adds %d, the quota is %d (policy rule %d); delete images or ask an administrator to raise the quota",
					c.Repo, used, add, r.Quota, r.N), nil
			}
		}
	case OpDeleteTag:
		if r := p.Immutable(c.Repo, c.Tag); r != nil {
			if _, ok, err := t.get(TagKey(c.Repo, c.Tag)); err != nil || ok {
				return denied("tag %s of %s is immutable (policy rule %d): it cannot be deleted", c.Tag, c.Repo, r.N), err
			}
		}
	case OpDeleteManifest:
		for _, tag := range t.keysAfter(keyPrefix(prefixTagByDig, c.Repo, string(c.Digest)), "", -1) {
			if r := p.Immutable(c.Repo, tag); r != nil {
				return denied("manifest %s of %s is tagged %s, an immutable tag (policy rule %d): it cannot be deleted",
					c.Digest, c.Repo, tag, r.N), nil
			}
		}
	}
	return nil, nil
}

// usage is the bytes the repository holds (see the top of this file).
func (t tx) usage(repo string) (int64, error) {
	v, _, err := t.get(usageKey(repo))
	return int64(DecodeUint64(v)), err
}

// usageAdded is what putting c adds to its repository's usage, and the
// blobs it references that the repository did not reference yet, with
// their linked sizes (0 if not linked).
func (t tx) usageAdded(c Command) (int64, []usedBlob, error) {
	if _, present, err := t.get(ManifestKey(c.Repo, c.Digest)); err != nil || present {
		return 0, nil, err
	}
	add := int64(len(c.Body))
	blobs, _, perr := references(c.Body)
	if perr != nil {
		return add, nil, nil
	}
	var fresh []usedBlob
	for _, d := range distinct(blobs) {
		_, ok, err := t.get(usedBlobKey(c.Repo, d))
		if err != nil {
			return 0, nil, err
		}
		if ok {
			continue
		}
		v, _, err := t.get(blobLinkKey(c.Repo, d))
		if err != nil {
			return 0, nil, err
		}
		size := int64(DecodeUint64(v))
		fresh = append(fresh, usedBlob{d, size})
		add += size
	}
	return add, fresh, nil
}

type usedBlob struct {
	d    digest.Digest
	size int64
}

func distinct(ds []digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return slices.Compact(out)
}

// counting reports whether usage is kept: a policy was ever stored.
func (t tx) counting() (bool, error) {
	_, ok, err := t.get(settingKey(SettingPolicy))
	return ok, err
}

// accountPut counts a manifest new to its repository (before it is put).
func (t tx) accountPut(c Command) error {
	add, _, err := t.usageAdded(c)
	if err != nil {
		return err
	}
	blobs, _, perr := references(c.Body)
	if perr == nil {
		for _, d := range distinct(blobs) {
			n, size, err := t.usedBlob(c.Repo, d)
			if err != nil {
				return err
			}
			if n == 0 {
				v, _, err := t.get(blobLinkKey(c.Repo, d))
				if err != nil {
					return err
				}
				size = int64(DecodeUint64(v))
			}
			if err := t.Set(usedBlobKey(c.Repo, d), usedBlobValue(n+1, size)); err != nil {
				return err
			}
		}
	}
	used, err := t.usage(c.Repo)
	if err != nil {
		return err
	}
	return t.Set(usageKey(c.Repo), EncodeUint64(uint64(used+add)))
}

// accountDelete gives back what a manifest (bodySize bytes) held, before
// it is deleted.
func (t tx) accountDelete(repo string, body []byte, bodySize int64) error {
	sub := bodySize
	blobs, _, perr := references(body)
	if perr == nil {
		for _, d := range distinct(blobs) {
			n, size, err := t.usedBlob(repo, d)
			if err != nil {
				return err
			}
			switch {
			case n == 0: // put before the accounting existed
			case n == 1:
				sub += size
				if err := t.Delete(usedBlobKey(repo, d)); err != nil {
					return err
				}
			default:
				if err := t.Set(usedBlobKey(repo, d), usedBlobValue(n-1, size)); err != nil {
					return err
				}
			}
		}
	}
	used, err := t.usage(repo)
	if err != nil {
		return err
	}
	if used <= sub {
		return t.Delete(usageKey(repo))
	}
	return t.Set(usageKey(repo), EncodeUint64(uint64(used-sub)))
}

func (t tx) usedBlob(repo string, d digest.Digest) (n uint64, size int64, err error) {
	v, ok, err := t.get(usedBlobKey(repo, d))
	if err != nil || !ok || len(v) != 16 {
		return 0, 0, err
	}
	return binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:])), nil
}

func usedBlobValue(n uint64, size int64) []byte {
	return binary.BigEndian.AppendUint64(EncodeUint64(n), uint64(size))
}

// setTagPush records a tag's push: the entry's index and the proposer's
// clock.
func (t tx) setTagPush(repo, tag string, index uint64, at int64) error {
	return t.Set(tagPushKey(repo, tag), binary.BigEndian.AppendUint64(EncodeUint64(index), uint64(max(at, 0))))
}

// Usage is the bytes repo holds (see the top of policy.go).
func (r Reader) Usage(repo string) (int64, error) {
	return r.t.usage(repo)
}

// CheckPolicy returns the content policy's refusal of c on this state
// (wrapping ErrPolicyDenied), nil if it allows it: the check Apply makes,
// for a writer to fail fast before proposing. cache may be nil.
func (r Reader) CheckPolicy(c Command, cache *PolicyCache) error {
	resp, err := r.t.checkPolicy(c, cache)
	if err != nil {
		return fmt.Errorf("consensus: reading the content policy: %w", err)
	}
	if resp != nil {
		return fmt.Errorf("consensus: %w", resp)
	}
	return nil
}

// Policy is the content policy at the view's index, nil if none.
func (v *View) Policy() (*policy.Policy, error) { return v.t.policy(nil) }

// Retention returns what p's retention rules delete at now (see
// policy.Rule.Select), at most limit deletions, by repository.
func (v *View) Retention(p *policy.Policy, now time.Time, limit int) ([]policy.Deletion, error) {
	var out []policy.Deletion
	if p == nil {
		return out, nil
	}
	for _, repo := range v.t.keysAfter([]byte{prefixRepo}, "", -1) {
		r := p.For(repo)
		if r == nil || r.Retention == nil {
			continue
		}
		tags, err := v.tagInfos(repo)
		if err != nil {
			return nil, err
		}
		var manifests []policy.ManifestInfo
		if r.Retention.DeleteUntaggedAfter > 0 {
			if manifests, err = v.manifestInfos(repo); err != nil {
				return nil, err
			}
		}
		out = append(out, r.Select(repo, tags, manifests, now)...)
		if len(out) >= limit {
			return out[:limit], nil
		}
	}
	return out, nil
}

func (v *View) tagInfos(repo string) ([]policy.TagInfo, error) {
	prefix := keyPrefix(prefixTag, repo)
	it := v.t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var out []policy.TagInfo
	for it.Rewind(); it.Valid(); it.Next() {
		tag := string(it.Item().Key()[len(prefix):])
		d, err := it.Item().ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		ti := policy.TagInfo{Tag: tag, Digest: digest.Digest(d)}
		pv, ok, err := v.t.get(tagPushKey(repo, tag))
		if err != nil {
			return nil, err
		}
		if ok && len(pv) == 16 {
			ti.Index = binary.BigEndian.Uint64(pv)
			if at := int64(binary.BigEndian.Uint64(pv[8:])); at > 0 {
				ti.Time = time.Unix(0, at)
			}
		}
		out = append(out, ti)
	}
	return out, nil
}

func (v *View) manifestInfos(repo string) ([]policy.ManifestInfo, error) {
	prefix := keyPrefix(prefixManifest, repo)
	it := v.t.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var out []policy.ManifestInfo
	children := map[digest.Digest]bool{}
	for it.Rewind(); it.Valid(); it.Next() {
		d := digest.Digest(it.Item().Key()[len(prefix):])
		var meta manifestMeta
		if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &meta) }); err != nil {
			return nil, fmt.Errorf("consensus: decoding manifest %s in %s: %w", d, repo, err)
		}
		mi := policy.ManifestInfo{Digest: d, Referenced: meta.Subject != "",
			Tagged: v.t.hasPrefix(keyPrefix(prefixTagByDig, repo, string(d)))}
		if meta.Time > 0 {
			mi.Time = time.Unix(0, meta.Time)
		}
		body, _, err := v.t.get(BodyKey(d))
		if err != nil {
			return nil, err
		}
		_, kids, perr := references(body)
		if perr != nil {
			mi.Referenced = true // unknown: keep it
		}
		for _, k := range kids {
			children[k] = true
		}
		out = append(out, mi)
	}
	for i := range out {
		out[i].Referenced = out[i].Referenced || children[out[i].Digest]
	}
	return out, nil
}

// RepoUsage is a repository's usage.
type RepoUsage struct {
	Repo  string `json:"repository"`
	Bytes int64  `json:"bytes"`
}

// Usages lists the repositories that hold bytes, by name, after `after`,
// at most n.
func (r Reader) Usages(after string, n int) ([]RepoUsage, error) {
	var out []RepoUsage
	for _, repo := range r.t.keysAfter([]byte{prefixUsage}, after, n) {
		b, err := r.t.usage(repo)
		if err != nil {
			return nil, err
		}
		out = append(out, RepoUsage{Repo: repo, Bytes: b})
	}
	return out, nil
}
