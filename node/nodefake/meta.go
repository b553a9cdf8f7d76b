package nodefake

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/consensus"
)

// Cluster is a replicated metadata store in memory: one ordered log of
// writes, committed at once, that each member's Meta applies when its
// lag has passed (0: at once). Its leader is the member named by Lead.
type Cluster struct {
	mu      sync.Mutex
	log     []entry
	members []consensus.Member
	metas   map[string]*Meta
	leader  string
	// configIndex moves with each membership change (State.MembershipIndex).
	configIndex uint64
}

type entry struct {
	at    time.Time
	apply func(*state) error
}

// NewCluster returns an empty cluster with no members.
func NewCluster() *Cluster { return &Cluster{metas: map[string]*Meta{}} }

// Join adds a voter with Raft address addr and returns its view of the
// metadata; the first member leads.
func (c *Cluster) Join(id, addr string) *Meta {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := &Meta{c: c, id: id, st: newState()}
	c.metas[id] = m
	c.members = append(c.members, consensus.Member{ID: id, Address: addr, Suffrage: consensus.Voter})
	if c.leader == "" {
		c.leader = id
	}
	c.changedLocked(true)
	return m
}

// Lead makes id the leader.
func (c *Cluster) Lead(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leader = id
	c.changedLocked(false)
}

// Meta is one member's view of a Cluster; it implements node.Metadata.
type Meta struct {
	c  *Cluster
	id string

	mu      sync.Mutex
	st      *state
	applied int // entries of c.log applied to st
	lag     time.Duration
	closed  bool
	watch   watchers
}

// SetLag makes this member apply each write lag after it was committed
// (a follower behind its leader).
func (m *Meta) SetLag(lag time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lag = lag
}

// catchUp applies the entries due; callers hold m.c.mu.
func (m *Meta) catchUp(all bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for m.applied < len(m.c.log) {
		e := m.c.log[m.applied]
		if !all && now.Sub(e.at) < m.lag {
			return
		}
		_ = e.apply(m.st)
		m.applied++
	}
}

// read runs fn on this member's state as applied so far.
func (m *Meta) read(fn func(*state) error) error {
	m.c.mu.Lock()
	m.catchUp(false)
	m.c.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return consensus.ErrClosed
	}
	return fn(m.st)
}

// write commits fn to the log and applies it here (as a follower waits for
// the leader's index before answering) and on the leader.
func (m *Meta) write(ctx context.Context, fn func(*state) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c := m.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == "" {
		return consensus.ErrNotLeader
	}
	if m.isClosed() {
		return consensus.ErrClosed
	}
	// The command's own error (not found) comes from the leader's apply.
	leader := c.metas[c.leader]
	leader.catchUp(true)
	c.log = append(c.log, entry{at: time.Now(), apply: fn})
	leader.mu.Lock()
	err := fn(leader.st)
	leader.applied++
	leader.mu.Unlock()
	if m != leader {
		m.catchUp(true)
	}
	return err
}

func (m *Meta) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

func (m *Meta) Manifest(repo string, d digest.Digest) (rec consensus.ManifestRecord, err error) {
	err = m.read(func(s *state) error {
		r, ok := s.manifests[repo][d]
		if !ok {
			return fmt.Errorf("nodefake: manifest %s is not in repository %s: %w", d, repo, consensus.ErrNotFound)
		}
		rec = r
		return nil
	})
	return rec, err
}

func (m *Meta) ResolveTag(repo, tag string) (d digest.Digest, err error) {
	err = m.read(func(s *state) error {
		v, ok := s.tags[repo][tag]
		if !ok {
			return fmt.Errorf("nodefake: tag %s is not in repository %s: %w", tag, repo, consensus.ErrNotFound)
		}
		d = v
		return nil
	})
	return d, err
}

func (m *Meta) Tags(repo, last string, n int) (tags []string, err error) {
	err = m.read(func(s *state) error {
		if !s.repos[repo] {
			return fmt.Errorf("nodefake: repository %s: %w", repo, consensus.ErrNotFound)
		}
		tags = page(slices.Collect(maps.Keys(s.tags[repo])), last, n)
		return nil
	})
	return tags, err
}

func (m *Meta) Repositories(last string, n int) (repos []string, err error) {
	err = m.read(func(s *state) error {
		repos = page(slices.Collect(maps.Keys(s.repos)), last, n)
		return nil
	})
	return repos, err
}

func (m *Meta) BlobLink(repo string, d digest.Digest) (size int64, err error) {
	err = m.read(func(s *state) error {
		v, ok := s.links[repo][d]
		if !ok {
			return fmt.Errorf("nodefake: blob %s is not linked to repository %s: %w", d, repo, consensus.ErrNotFound)
		}
		size = v
		return nil
	})
	return size, err
}

func (m *Meta) Referrers(repo string, subject digest.Digest, artifactType, last string, n int) ([]ocispec.Descriptor, error) {
	out := []ocispec.Descriptor{}
	err := m.read(func(s *state) error {
		for _, r := range s.manifests[repo] {
			if r.Subject == subject && (artifactType == "" || r.ArtifactType == artifactType) && string(r.Digest) > last {
				out = append(out, ocispec.Descriptor{MediaType: r.MediaType, Digest: r.Digest, Size: int64(len(r.Body)),
					ArtifactType: r.ArtifactType, Annotations: r.Annotations})
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b ocispec.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	if n >= 0 && len(out) > n {
		out = out[:n]
	}
	return out, err
}

// AppliedIndex counts the writes this member has applied (the log starts
// at 1, as Raft's).
func (m *Meta) AppliedIndex() uint64 {
	m.c.mu.Lock()
	m.catchUp(false)
	m.c.mu.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(m.applied)
}

func (m *Meta) PutManifest(ctx context.Context, rec consensus.ManifestRecord, tags ...string) error {
	if err := m.CheckPutManifest(rec, tags...); err != nil {
		return err
	}
	return m.write(ctx, func(s *state) error {
		s.repos[rec.Repo] = true
		if _, ok := s.manifests[rec.Repo][rec.Digest]; !ok {
			inner(s.manifests, rec.Repo)[rec.Digest] = rec
		}
		for _, t := range tags {
			inner(s.tags, rec.Repo)[t] = rec.Digest
		}
		return nil
	})
}

// CheckPutManifest refuses what no store could apply; the real bounds are
// consensus's (limits.go).
func (m *Meta) CheckPutManifest(rec consensus.ManifestRecord, tags ...string) error {
	if rec.Repo == "" || rec.Digest.Validate() != nil {
		return fmt.Errorf("nodefake: manifest %q in %q: %w", rec.Digest, rec.Repo, consensus.ErrInvalidCommand)
	}
	return nil
}

func (m *Meta) DeleteManifest(ctx context.Context, repo string, d digest.Digest) error {
	return m.write(ctx, func(s *state) error {
		if _, ok := s.manifests[repo][d]; !ok {
			return fmt.Errorf("nodefake: manifest %s is not in repository %s: %w", d, repo, consensus.ErrNotFound)
		}
		delete(s.manifests[repo], d)
		maps.DeleteFunc(s.tags[repo], func(_ string, v digest.Digest) bool { return v == d })
		s.forgetIfEmpty(repo)
		return nil
	})
}

func (m *Meta) DeleteTag(ctx context.Context, repo, tag string) error {
	return m.write(ctx, func(s *state) error {
		if _, ok := s.tags[repo][tag]; !ok {
			return fmt.Errorf("nodefake: tag %s is not in repository %s: %w", tag, repo, consensus.ErrNotFound)
		}
		delete(s.tags[repo], tag)
		return nil
	})
}

func (m *Meta) LinkBlob(ctx context.Context, repo string, d digest.Digest, size int64) error {
	return m.write(ctx, func(s *state) error {
		s.repos[repo] = true
		inner(s.links, repo)[d] = size
		return nil
	})
}

func (m *Meta) UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	return m.write(ctx, func(s *state) error {
		if _, ok := s.links[repo][d]; !ok {
			return fmt.Errorf("nodefake: blob %s is not linked to repository %s: %w", d, repo, consensus.ErrNotFound)
		}
		delete(s.links[repo], d)
		s.forgetIfEmpty(repo)
		return nil
	})
}

// MirrorTag reads a mirrored tag (as consensus.Store.MirrorTag).
func (m *Meta) MirrorTag(repo, tag string) (rec consensus.MirrorTag, err error) {
	err = m.read(func(s *state) error {
		r, ok := s.mirror[repo+"\x00"+tag]
		if _, held := s.manifests[repo][r.Digest]; !ok || !held {
			return fmt.Errorf("nodefake: mirrored tag %s of %s: %w", tag, repo, consensus.ErrNotFound)
		}
		rec = r
		return nil
	})
	return rec, err
}

// PutMirrorTag records a mirrored tag whose manifest the repository holds
// (as consensus.Store.PutMirrorTag).
func (m *Meta) PutMirrorTag(ctx context.Context, repo, tag string, rec consensus.MirrorTag) error {
	return m.write(ctx, func(s *state) error {
		if _, ok := s.manifests[repo][rec.Digest]; !ok {
			return fmt.Errorf("nodefake: manifest %s of mirrored tag %s is not in %s: %w", rec.Digest, tag, repo, consensus.ErrNotFound)
		}
		s.mirror[repo+"\x00"+tag] = rec
		inner(s.tags, repo)[tag] = rec.Digest
		return nil
	})
}

// ApplyForwarded is not supported: a fake member writes to the shared log
// directly, never through the leader's forward protocol.
func (m *Meta) ApplyForwarded(ctx context.Context, cmd []byte) error {
	return fmt.Errorf("nodefake: forwarded commands are not supported: %w", consensus.ErrInvalidCommand)
}

func (m *Meta) Status() consensus.Status {
	c := m.c
	c.mu.Lock()
	m.catchUp(false)
	st := consensus.Status{State: consensus.Follower, LeaderID: c.leader, Members: slices.Clone(c.members), Term: 1,
		CommitIndex: uint64(len(c.log)), LastIndex: uint64(len(c.log))}
	for _, mb := range c.members {
		if mb.ID == c.leader {
			st.LeaderAddress = mb.Address
		}
	}
	leads := c.leader == m.id
	c.mu.Unlock()
	if leads {
		st.State = consensus.Leader
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		st.State = consensus.Shutdown
	}
	st.AppliedIndex = uint64(m.applied)
	return st
}

func (m *Meta) Ready() bool {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return m.c.leader != "" && !m.isClosed()
}

func (m *Meta) Members() ([]consensus.Member, error) {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	return slices.Clone(m.c.members), nil
}

// member changes the configuration, on the leader only.
func (m *Meta) member(ctx context.Context, fn func(c *Cluster) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	if m.c.leader != m.id {
		return consensus.ErrNotLeader
	}
	return fn(m.c)
}

func (m *Meta) AddNonvoter(ctx context.Context, id, addr string) error {
	return m.member(ctx, func(c *Cluster) error {
		if !slices.ContainsFunc(c.members, func(x consensus.Member) bool { return x.ID == id }) {
			c.members = append(c.members, consensus.Member{ID: id, Address: addr, Suffrage: consensus.Nonvoter})
			c.changedLocked(true)
		}
		return nil
	})
}

func (m *Meta) Promote(ctx context.Context, id string) error {
	return m.member(ctx, func(c *Cluster) error {
		for i := range c.members {
			if c.members[i].ID == id {
				c.members[i].Suffrage = consensus.Voter
				c.changedLocked(true)
				return nil
			}
		}
		return fmt.Errorf("nodefake: %s is not a member: %w", id, consensus.ErrNotFound)
	})
}

func (m *Meta) RemoveServer(ctx context.Context, id string) error {
	return m.member(ctx, func(c *Cluster) error {
		c.members = slices.DeleteFunc(c.members, func(x consensus.Member) bool { return x.ID == id })
		c.changedLocked(true)
		return nil
	})
}

// TransferLeadership hands leadership to the next voter, if any.
func (m *Meta) TransferLeadership(ctx context.Context) error {
	return m.member(ctx, func(c *Cluster) error {
		for _, x := range c.members {
			if x.ID != m.id && x.Suffrage == consensus.Voter {
				c.leader = x.ID
				c.changedLocked(false)
				return nil
			}
		}
		return fmt.Errorf("nodefake: no other voter to lead")
	})
}

// BootstrapWith is a no-op: a Cluster is configured by Join.
func (m *Meta) BootstrapWith(servers []consensus.Server) error { return nil }

// Close closes this member's view; a closed leader leaves the cluster
// without one.
func (m *Meta) Close() error {
	m.c.mu.Lock()
	defer m.c.mu.Unlock()
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	if m.c.leader == m.id {
		m.c.leader = ""
	}
	m.c.changedLocked(false)
	m.watch.close()
	return nil
}

var _ io.Closer = (*Meta)(nil)

// state is one member's applied metadata.
type state struct {
	repos     map[string]bool
	manifests map[string]map[digest.Digest]consensus.ManifestRecord
	tags      map[string]map[string]digest.Digest
	links     map[string]map[digest.Digest]int64
	mirror    map[string]consensus.MirrorTag // repo·tag
}

func newState() *state {
	return &state{repos: map[string]bool{}, manifests: map[string]map[digest.Digest]consensus.ManifestRecord{},
		tags: map[string]map[string]digest.Digest{}, links: map[string]map[digest.Digest]int64{}, mirror: map[string]consensus.MirrorTag{}}
}

// forgetIfEmpty drops repo from the list once it holds no manifest, tag or
// blob link (as consensus does after a manifest delete or an unlink).
func (s *state) forgetIfEmpty(repo string) {
	if len(s.manifests[repo]) == 0 && len(s.tags[repo]) == 0 && len(s.links[repo]) == 0 {
		delete(s.repos, repo)
	}
}

// inner returns outer[k], made if missing.
func inner[K comparable, V any](outer map[string]map[K]V, k string) map[K]V {
	if outer[k] == nil {
		outer[k] = map[K]V{}
	}
	return outer[k]
}

// page sorts names and returns those after last (all if ""), at most n
// (all if n < 0), never nil.
func page(names []string, last string, n int) []string {
	slices.Sort(names)
	out := []string{}
	for _, s := range names {
		if last != "" && s <= last {
			continue
		}
		if n >= 0 && len(out) == n {
			break
		}
		out = append(out, s)
	}
	return out
}
