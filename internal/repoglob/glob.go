// Package repoglob matches repository names against patterns: the access
// policy, the rate limits and the content policies (retention, immutable
// tags, quotas) share it.
package repoglob

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// RepoGlob is a repository pattern of the access policy, the rate
// limits and the content policies: segments split at /, path.Match within a segment, and a segment
// that is exactly ** matching any number of segments (zero included, so
// team/** matches team too).
type RepoGlob []string

// ParseRepoGlob checks g. Consecutive ** segments are folded into one:
// they match the same names, and a repository name (chosen by a client)
// must not make matching cost more than it needs to.
func ParseRepoGlob(g string) (RepoGlob, error) {
	if g == "" {
		return nil, errors.New("an empty repository glob")
	}
	var segs RepoGlob
	for _, s := range strings.Split(g, "/") {
		switch {
		case s == "":
			return nil, fmt.Errorf("repository glob %q has an empty segment", g)
		case s == "**":
			if len(segs) > 0 && segs[len(segs)-1] == "**" {
				continue
			}
		case strings.Contains(s, "**"):
			return nil, fmt.Errorf("repository glob %q: ** must be a whole segment (a/**/b), not part of one", g)
		default:
			if _, err := path.Match(s, ""); err != nil {
				return nil, fmt.Errorf("repository glob %q: bad segment %q: %v", g, s, err)
			}
		}
		segs = append(segs, s)
	}
	return segs, nil
}

// Match reports whether repo, split at /, matches the glob.
func (g RepoGlob) Match(repo []string) bool {
	if len(g) == 0 {
		return len(repo) == 0
	}
	if g[0] == "**" {
		for i := 0; i <= len(repo); i++ {
			if g[1:].Match(repo[i:]) {
				return true
			}
		}
		return false
	}
	if len(repo) == 0 {
		return false
	}
	if ok, _ := path.Match(g[0], repo[0]); !ok {
		return false
	}
	return g[1:].Match(repo[1:])
}
