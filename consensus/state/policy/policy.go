// Package policy is the cluster's content policy: retention, immutable
// tags and quotas per repository glob. The document is YAML, stored
// through Raft as the "policy" setting (state.SettingPolicy) exactly as
// the administrator wrote it, and parsed by every node that applies a
// write it governs, so every node decides alike. Parse is deterministic
// and bounded (MaxRules, MaxPatterns); it refuses unknown keys and names
// the line of every mistake.
//
//	rules:
//	  - repositories: [team/**]     # repository globs (required)
//	    exclude: [team/scratch]     # repositories the rule skips
//	    immutable:                  # these tags cannot move or be deleted
//	      tags: ["v*"]              # tag patterns (path.Match); default every tag
//	      exclude: [latest]
//	    quota: 10GiB                # bytes per repository
//	    retention:                  # applied by garbage collection
//	      tags: ["ci-*"]            # tags retention may delete (default every tag)
//	      exclude: [stable]
//	      keepLast: 10              # keep the 10 most recently pushed of them
//	      deleteTagsAfter: 30d      # delete them once pushed longer ago than this
//	      deleteUntaggedAfter: 7d   # delete untagged manifests pushed longer ago
//
// The first rule whose repositories match a repository (and whose exclude
// does not) governs it; later rules do not apply to it.
package policy

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshreg/meshreg/internal/bytesize"
	"github.com/meshreg/meshreg/internal/repoglob"
)

// Bounds of a policy document: each keeps parsing it, and matching a
// repository or tag against it, cheap on every write that it governs.
const (
	MaxRules    = 100
	MaxPatterns = 64
	// MaxAge bounds an age (100 years).
	MaxAge = 100 * 365 * 24 * time.Hour
	// MaxKeepLast bounds keepLast.
	MaxKeepLast = 1 << 20
)

// Policy is a parsed policy document.
type Policy struct {
	Rules []*Rule
}

// Rule is one entry of rules.
type Rule struct {
	// N is the rule's place in the document, from 1 (messages name it).
	N            int
	Repositories []string
	Exclude      []string
	repos, excl  []repoglob.RepoGlob
	// Immutable, if not nil, lists the tags that cannot move or go.
	Immutable *TagSet
	// Quota is the bytes each repository may hold; 0: no quota.
	Quota int64
	// Retention, if not nil, is what garbage collection deletes.
	Retention *Retention
}

// TagSet is the tags a pattern list names, less the exclusions; no
// patterns means every tag.
type TagSet struct {
	Tags    []string
	Exclude []string
}

// Retention says which tags and untagged manifests a garbage collection
// deletes in a repository.
type Retention struct {
	TagSet
	// KeepLast keeps the most recently pushed tags of the set (0: no
	// count limit).
	KeepLast int
	// DeleteTagsAfter deletes tags of the set pushed longer ago (0: never).
	DeleteTagsAfter time.Duration
	// DeleteUntaggedAfter deletes manifests without a tag pushed longer
	// ago (0: never).
	DeleteUntaggedAfter time.Duration
}

// Match reports whether tag is in the set.
func (s *TagSet) Match(tag string) bool {
	if s == nil {
		return false
	}
	for _, p := range s.Exclude {
		if ok, _ := path.Match(p, tag); ok {
			return false
		}
	}
	if len(s.Tags) == 0 {
		return true
	}
	for _, p := range s.Tags {
		if ok, _ := path.Match(p, tag); ok {
			return true
		}
	}
	return false
}

// For returns the rule that governs repo, nil if none.
func (p *Policy) For(repo string) *Rule {
	if p == nil {
		return nil
	}
	segs := strings.Split(repo, "/")
	for _, r := range p.Rules {
		if matchAny(r.repos, segs) && !matchAny(r.excl, segs) {
			return r
		}
	}
	return nil
}

func matchAny(globs []repoglob.RepoGlob, segs []string) bool {
	for _, g := range globs {
		if g.Match(segs) {
			return true
		}
	}
	return false
}

// Immutable returns the rule that makes tag of repo immutable, nil if none.
func (p *Policy) Immutable(repo, tag string) *Rule {
	if r := p.For(repo); r != nil && r.Immutable.Match(tag) {
		return r
	}
	return nil
}

// Quota returns the rule that sets repo's quota, nil if none.
func (p *Policy) Quota(repo string) *Rule {
	if r := p.For(repo); r != nil && r.Quota > 0 {
		return r
	}
	return nil
}

// Parse reads and validates a policy document; an error names the line.
// A document with an empty rule list is valid: it clears the policy.
func Parse(data []byte) (*Policy, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if len(root.Content) == 0 {
		return nil, errors.New("policy: the document is empty: write `rules: []` to clear the policy")
	}
	doc := root.Content[0]
	fields, err := mapping(doc, "the document", "rules")
	if err != nil {
		return nil, err
	}
	rules := fields["rules"]
	if rules == nil {
		return nil, fmt.Errorf("policy: line %d: no `rules:` list (write `rules: []` to clear the policy)", doc.Line)
	}
	if rules.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("policy: line %d: rules must be a list", rules.Line)
	}
	if len(rules.Content) > MaxRules {
		return nil, fmt.Errorf("policy: line %d: %d rules: at most %d", rules.Content[MaxRules].Line, len(rules.Content), MaxRules)
	}
	p := &Policy{}
	for i, n := range rules.Content {
		r, err := parseRule(n, i+1)
		if err != nil {
			return nil, err
		}
		p.Rules = append(p.Rules, r)
	}
	return p, nil
}

func parseRule(n *yaml.Node, i int) (*Rule, error) {
	where := fmt.Sprintf("rule %d", i)
	f, err := mapping(n, where, "repositories", "exclude", "immutable", "quota", "retention")
	if err != nil {
		return nil, err
	}
	r := &Rule{N: i}
	if f["repositories"] == nil {
		return nil, fmt.Errorf("policy: line %d: %s names no repositories (e.g. repositories: [team/**])", n.Line, where)
	}
	if r.Repositories, r.repos, err = globs(f["repositories"], where+": repositories"); err != nil {
		return nil, err
	}
	if len(r.Repositories) == 0 {
		return nil, fmt.Errorf("policy: line %d: %s names no repositories (e.g. repositories: [team/**])", n.Line, where)
	}
	if r.Exclude, r.excl, err = globs(f["exclude"], where+": exclude"); err != nil {
		return nil, err
	}
	if m := f["immutable"]; m != nil {
		tf, err := mapping(m, where+": immutable", "tags", "exclude")
		if err != nil {
			return nil, err
		}
		r.Immutable = &TagSet{}
		if err := r.Immutable.parse(tf, where+": immutable"); err != nil {
			return nil, err
		}
	}
	if q := f["quota"]; q != nil {
		if r.Quota, err = parseSize(q.Value); err != nil || q.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("policy: line %d: %s: quota %q is not a size such as 500MiB, 10GiB or 1000000 (bytes): %v", q.Line, where, q.Value, err)
		}
	}
	if m := f["retention"]; m != nil {
		rf, err := mapping(m, where+": retention", "tags", "exclude", "keepLast", "deleteTagsAfter", "deleteUntaggedAfter")
		if err != nil {
			return nil, err
		}
		ret := &Retention{}
		if err := ret.parse(rf, where+": retention"); err != nil {
			return nil, err
		}
		if k := rf["keepLast"]; k != nil {
			v, err := strconv.Atoi(k.Value)
			if err != nil || k.Kind != yaml.ScalarNode || v < 0 || v > MaxKeepLast {
				return nil, fmt.Errorf("policy: line %d: %s: keepLast %q is not a count from 0 to %d", k.Line, where, k.Value, MaxKeepLast)
			}
			ret.KeepLast = v
		}
		for key, p := range map[string]*time.Duration{"deleteTagsAfter": &ret.DeleteTagsAfter, "deleteUntaggedAfter": &ret.DeleteUntaggedAfter} {
			if a := rf[key]; a != nil {
				if *p, err = parseAge(a.Value); err != nil || a.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("policy: line %d: %s: retention %s %q is not an age such as 7d, 36h or 90m: %v", a.Line, where, key, a.Value, err)
				}
			}
		}
		if ret.KeepLast == 0 && ret.DeleteTagsAfter == 0 && ret.DeleteUntaggedAfter == 0 {
			return nil, fmt.Errorf("policy: line %d: %s: retention deletes nothing: give keepLast, deleteTagsAfter or deleteUntaggedAfter", m.Line, where)
		}
		r.Retention = ret
	}
	if r.Immutable == nil && r.Quota == 0 && r.Retention == nil {
		return nil, fmt.Errorf("policy: line %d: %s sets nothing: give immutable, quota or retention", n.Line, where)
	}
	return r, nil
}

func (s *TagSet) parse(f map[string]*yaml.Node, where string) error {
	var err error
	if s.Tags, err = tagPatterns(f["tags"], where+": tags"); err != nil {
		return err
	}
	s.Exclude, err = tagPatterns(f["exclude"], where+": exclude")
	return err
}

// mapping checks that n is a mapping with only the known keys, and returns
// its values by key.
func mapping(n *yaml.Node, where string, known ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("policy: line %d: %s must be a mapping of %s", n.Line, where, strings.Join(known, ", "))
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ok := false
		for _, want := range known {
			ok = ok || k.Value == want
		}
		if !ok {
			hint := ""
			if s, found := nearest(k.Value, known); found {
				hint = fmt.Sprintf(" (did you mean %s?)", s)
			}
			return nil, fmt.Errorf("policy: line %d: %s: unknown key %q%s; known keys: %s", k.Line, where, truncate(k.Value), hint, strings.Join(known, ", "))
		}
		if out[k.Value] != nil {
			return nil, fmt.Errorf("policy: line %d: %s: key %s given twice", k.Line, where, k.Value)
		}
		out[k.Value] = v
	}
	return out, nil
}

// list reads a list of strings.
func list(n *yaml.Node, where string) ([]string, error) {
	if n == nil {
		return nil, nil
	}
	if n.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("policy: line %d: %s must be a list, e.g. [a, b]", n.Line, where)
	}
	if len(n.Content) > MaxPatterns {
		return nil, fmt.Errorf("policy: line %d: %s has %d patterns: at most %d", n.Line, where, len(n.Content), MaxPatterns)
	}
	out := make([]string, 0, len(n.Content))
	for _, e := range n.Content {
		if e.Kind != yaml.ScalarNode || e.Value == "" {
			return nil, fmt.Errorf("policy: line %d: %s: each entry must be a non-empty pattern", e.Line, where)
		}
		out = append(out, e.Value)
	}
	return out, nil
}

func globs(n *yaml.Node, where string) ([]string, []repoglob.RepoGlob, error) {
	ss, err := list(n, where)
	if err != nil {
		return nil, nil, err
	}
	gs := make([]repoglob.RepoGlob, len(ss))
	for i, s := range ss {
		if gs[i], err = repoglob.ParseRepoGlob(s); err != nil {
			return nil, nil, fmt.Errorf("policy: line %d: %s: %w", n.Content[i].Line, where, err)
		}
	}
	return ss, gs, nil
}

func tagPatterns(n *yaml.Node, where string) ([]string, error) {
	ss, err := list(n, where)
	if err != nil {
		return nil, err
	}
	for i, s := range ss {
		if _, err := path.Match(s, ""); err != nil || len(s) > 256 {
			return nil, fmt.Errorf("policy: line %d: %s: %q is not a tag pattern (path.Match syntax: *, ?, [a-z], at most 256 bytes)", n.Content[i].Line, where, truncate(s))
		}
	}
	return ss, nil
}

// parseSize reads a quota: bytes, optionally with a unit (bytesize.Parse:
// B, kB/KB, MB, GB, TB are powers of 1000, KiB, MiB, GiB, TiB of 1024).
func parseSize(s string) (int64, error) {
	v, err := bytesize.Parse(s)
	switch {
	case err != nil:
		return 0, err
	case v <= 0:
		return 0, errors.New("it must be above 0")
	}
	return v, nil
}

// parseAge reads a Go duration (36h, 90m) or a number of days (7d).
func parseAge(s string) (time.Duration, error) {
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.Atoi(n)
		if err != nil {
			return 0, errors.New("not a whole number of days")
		}
		if v < 0 || v > int(MaxAge/(24*time.Hour)) {
			return 0, fmt.Errorf("at most %d days", MaxAge/(24*time.Hour))
		}
		d = time.Duration(v) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, errors.New("not a duration")
		}
	}
	if d <= 0 || d > MaxAge {
		return 0, fmt.Errorf("it must be above 0 and at most %s", MaxAge)
	}
	return d, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// nearest returns the known key within two edits of word (case aside),
// for a "did you mean" hint.
func nearest(word string, known []string) (string, bool) {
	w := strings.ToLower(word)
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(w, strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	return best, best != ""
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
