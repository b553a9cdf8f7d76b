// Package policy reads the access policy: which users, groups or anonymous
// clients may pull, push or delete in which repositories, and who is a
// cluster admin. Rules only grant: a request is allowed when any rule
// allows it, and denied otherwise.
//
// The file is YAML:
//
//	groups:
//	  devs: [alice, carol]
//	rules:
//	  - groups: [devs]
//	    repos: ["team/**"]
//	    allow: [pull, push, delete]
//	  - users: [bob]
//	    repos: ["team/**"]
//	    allow: [pull]
//	  - users: [anonymous]          # every client, even without credentials
//	    repos: ["public/**"]
//	    allow: [pull]
//	  - users: [alice]
//	    allow: [admin]              # cluster endpoints; no repos
//
// users are htpasswd user names, or one of the two reserved names
// `anonymous` (every client, with or without credentials: what anonymous
// clients may do, logged-in users may do too) and `authenticated` (any
// valid user).
// Repository globs match segment by segment (segments are split at /):
// within a segment, path.Match syntax (`*` is any run of characters but
// /, `?`, `[a-z]`); a segment that is exactly `**` matches any number of
// segments, zero included, so `team/**` matches `team`, `team/app` and
// `team/a/b`, and `**` matches every repository.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/meshreg/meshreg/api/auth"
)

// Bounds of one policy file.
const (
	MaxSize  = 1 << 20
	MaxRules = 10_000
)

// Reserved user names.
const (
	UserAnonymous     = "anonymous"
	UserAuthenticated = "authenticated"
)

// Policy is a parsed, validated policy. It is immutable.
type Policy struct {
	rules []rule
}

type rule struct {
	users  []string // resolved: groups expanded
	repos  []auth.RepoGlob
	allow  []auth.Action
	admins bool
}

var _ auth.Authorizer = (*Policy)(nil)

type fileDoc struct {
	Groups map[string][]string `yaml:"groups"`
	Rules  []yaml.Node         `yaml:"rules"`
}

type ruleDoc struct {
	Users  []string `yaml:"users"`
	Groups []string `yaml:"groups"`
	Repos  []string `yaml:"repos"`
	Allow  []string `yaml:"allow"`
}

// Parse reads and validates a policy; an error names the line.
func Parse(data []byte) (*Policy, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("policy is %d bytes, more than %d", len(data), MaxSize)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	if len(root.Content) == 0 {
		return &Policy{}, nil
	}
	doc := root.Content[0]
	if err := knownKeys(doc, "groups", "rules"); err != nil {
		return nil, err
	}
	var f fileDoc
	if err := doc.Decode(&f); err != nil {
		return nil, err
	}
	if len(f.Rules) > MaxRules {
		return nil, fmt.Errorf("line %d: more than %d rules", f.Rules[MaxRules].Line, MaxRules)
	}
	groupLine := map[string]int{}
	if g := mapValue(doc, "groups"); g != nil {
		for i := 0; i+1 < len(g.Content); i += 2 {
			groupLine[g.Content[i].Value] = g.Content[i].Line
		}
	}
	for name, members := range f.Groups {
		for _, m := range members {
			if m == UserAnonymous || m == UserAuthenticated || m == "" {
				return nil, fmt.Errorf("line %d: group %q: %q cannot be a group member: name it in a rule's users", groupLine[name], name, m)
			}
		}
	}
	p := &Policy{}
	for i := range f.Rules {
		n := &f.Rules[i]
		if err := knownKeys(n, "users", "groups", "repos", "allow"); err != nil {
			return nil, err
		}
		var rd ruleDoc
		if err := n.Decode(&rd); err != nil {
			return nil, err
		}
		r, err := buildRule(rd, f.Groups)
		if err != nil {
			return nil, fmt.Errorf("line %d: rule %d: %w", n.Line, i+1, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, nil
}

func buildRule(rd ruleDoc, groups map[string][]string) (rule, error) {
	var r rule
	if len(rd.Users) == 0 && len(rd.Groups) == 0 {
		return r, errors.New("names no users and no groups")
	}
	for _, u := range rd.Users {
		if u == "" {
			return r, errors.New("an empty user name")
		}
		r.users = append(r.users, u)
	}
	for _, g := range rd.Groups {
		members, ok := groups[g]
		if !ok {
			return r, fmt.Errorf("group %q is not defined under groups", g)
		}
		r.users = append(r.users, members...)
	}
	if len(rd.Allow) == 0 {
		return r, fmt.Errorf("allows nothing: list actions under allow (%s)", actionList())
	}
	for _, a := range rd.Allow {
		act := auth.Action(a)
		if !slices.Contains(auth.Actions, act) {
			return r, fmt.Errorf("unknown action %q: use %s", a, actionList())
		}
		if act == auth.Admin {
			r.admins = true
			continue
		}
		r.allow = append(r.allow, act)
	}
	if r.admins && len(rd.Repos) > 0 {
		return r, errors.New("admin is a cluster right and takes no repos: grant it in a rule of its own")
	}
	if len(r.allow) > 0 && len(rd.Repos) == 0 {
		return r, errors.New("grants repository actions but lists no repos (use \"**\" for all)")
	}
	for _, g := range rd.Repos {
		segs, err := auth.ParseRepoGlob(g)
		if err != nil {
			return r, err
		}
		r.repos = append(r.repos, segs)
	}
	return r, nil
}

func actionList() string {
	var s []string
	for _, a := range auth.Actions {
		s = append(s, string(a))
	}
	return strings.Join(s, ", ")
}

// MatchRepo reports whether a repository glob matches repo (for tests and
// documentation; an invalid glob matches nothing).
func MatchRepo(glob, repo string) bool {
	g, err := auth.ParseRepoGlob(glob)
	return err == nil && g.Match(strings.Split(repo, "/"))
}

func (r *rule) names(id auth.Identity) bool {
	for _, u := range r.users {
		switch {
		case u == UserAnonymous:
			return true // what anonymous clients may do, every client may
		case u == UserAuthenticated && !id.IsAnonymous():
			return true
		case u == UserAuthenticated:
			// reserved: never a user's own name
		case !id.IsAnonymous() && u == id.User:
			return true
		}
	}
	return false
}

// Authorize reports whether some rule grants a on repo to id.
func (p *Policy) Authorize(id auth.Identity, repo string, a auth.Action) bool {
	var segs []string
	if a != auth.Admin {
		segs = strings.Split(repo, "/")
	}
	for i := range p.rules {
		r := &p.rules[i]
		if !r.names(id) {
			continue
		}
		if a == auth.Admin {
			if r.admins {
				return true
			}
			continue
		}
		if !slices.Contains(r.allow, a) {
			continue
		}
		for _, g := range r.repos {
			if g.Match(segs) {
				return true
			}
		}
	}
	return false
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func knownKeys(n *yaml.Node, keys ...string) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: want a mapping with keys %s", n.Line, strings.Join(keys, ", "))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(keys, k.Value) {
			return fmt.Errorf("line %d: unknown key %q: use %s", k.Line, k.Value, strings.Join(keys, ", "))
		}
	}
	return nil
}

// Watched is a policy file reloaded when it changes.
type Watched struct{ w *auth.Watched[*Policy] }

var _ auth.Authorizer = (*Watched)(nil)

// Open reads path; errors name the file and the line. onReload (if not
// nil) is told of every later change of the file: nil when it was
// applied, the error when it was rejected (the last good one stays).
func Open(path string, onReload func(error)) (*Watched, error) {
	parse := func(data []byte) (*Policy, error) {
		p, err := Parse(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")))
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", path, err)
		}
		return p, nil
	}
	w, err := auth.Watch(path, parse)
	if err != nil {
		return nil, fmt.Errorf("--auth-policy: %w", err)
	}
	w.OnReload = onReload
	return &Watched{w: w}, nil
}

// Authorize asks the current policy.
func (w *Watched) Authorize(id auth.Identity, repo string, a auth.Action) bool {
	return w.w.Get().Authorize(id, repo, a)
}
