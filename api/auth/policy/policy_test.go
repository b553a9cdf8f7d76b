package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api/auth"
)

const example = `groups:
  devs: [alice, carol]
rules:
  - groups: [devs]
    repos: ["team/**"]
    allow: [pull, push, delete]
  - users: [bob]
    repos: ["team/*"]
    allow: [pull]
  - users: [anonymous]
    repos: ["public/**"]
    allow: [pull]
  - users: [authenticated]
    repos: ["lib/*/stable"]
    allow: [pull]
  - users: [alice]
    allow: [admin]
`

func TestAuthorize(t *testing.T) {
	p, err := Parse([]byte(example))
	if err != nil {
		t.Fatal(err)
	}
	alice, bob, carol, anon := auth.Identity{User: "alice"}, auth.Identity{User: "bob"}, auth.Identity{User: "carol"}, auth.Anonymous
	cases := []struct {
		id   auth.Identity
		repo string
		a    auth.Action
		want bool
	}{
		{alice, "team/app", auth.Push, true},
		{alice, "team/a/b", auth.Delete, true},
		{carol, "team/app", auth.Push, true},
		{alice, "other/app", auth.Pull, false},
		{bob, "team/app", auth.Pull, true},
		{bob, "team/app", auth.Push, false},
		{bob, "team/a/b", auth.Pull, false}, // * is one segment
		{anon, "public/x", auth.Pull, true},
		{anon, "public/x/y", auth.Pull, true},
		{anon, "public/x", auth.Push, false},
		{anon, "team/app", auth.Pull, false},
		{bob, "lib/go/stable", auth.Pull, true},
		{anon, "lib/go/stable", auth.Pull, false},
		{alice, "", auth.Admin, true},
		{bob, "", auth.Admin, false},
		{anon, "", auth.Admin, false},
		{bob, "public/x", auth.Pull, true}, // what anonymous may do, everyone may
		{bob, "public/x", auth.Push, false},
		{auth.Identity{User: "authenticated"}, "lib/go/stable", auth.Pull, true}, // a valid user, whatever the name
	}
	for _, c := range cases {
		if got := p.Authorize(c.id, c.repo, c.a); got != c.want {
			t.Errorf("Authorize(%s, %q, %s) = %v, want %v", c.id, c.repo, c.a, got, c.want)
		}
	}
}

func TestMatchRepo(t *testing.T) {
	cases := []struct {
		glob, repo string
		want       bool
	}{
		{"**", "a", true}, {"**", "a/b/c", true},
		{"team/**", "team", true}, {"team/**", "team/a/b", true}, {"team/**", "teams/a", false},
		{"a/**/z", "a/z", true}, {"a/**/z", "a/b/c/z", true}, {"a/**/z", "a/b/c", false},
		{"a/*", "a/b", true}, {"a/*", "a/b/c", false}, {"a/b*", "a/bc", true}, {"a/?", "a/bc", false},
	}
	for _, c := range cases {
		if got := MatchRepo(c.glob, c.repo); got != c.want {
			t.Errorf("MatchRepo(%q, %q) = %v, want %v", c.glob, c.repo, got, c.want)
		}
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	cases := map[string]struct{ in, want string }{
		"unknown action":  {"rules:\n  - users: [a]\n    repos: [x]\n    allow: [pul]\n", `line 2: rule 1: unknown action "pul"`},
		"unknown group":   {"rules:\n  - groups: [g]\n    repos: [x]\n    allow: [pull]\n", `line 2: rule 1: group "g" is not defined`},
		"unknown key":     {"rules:\n  - users: [a]\n    repo: [x]\n    allow: [pull]\n", `line 3: unknown key "repo"`},
		"top key":         {"rule: []\n", `line 1: unknown key "rule"`},
		"bad glob":        {"rules:\n  - users: [a]\n    repos: [\"a/[\"]\n    allow: [pull]\n", `line 2: rule 1: repository glob "a/["`},
		"partial **":      {"rules:\n  - users: [a]\n    repos: [\"a**\"]\n    allow: [pull]\n", `** must be a whole segment`},
		"no repos":        {"rules:\n  - users: [a]\n    allow: [pull]\n", `lists no repos`},
		"admin with repo": {"rules:\n  - users: [a]\n    repos: [x]\n    allow: [admin]\n", `takes no repos`},
		"nobody":          {"rules:\n  - repos: [x]\n    allow: [pull]\n", `names no users`},
		"anon in group":   {"groups:\n  g: [anonymous]\nrules: []\n", `line 2: group "g"`},
		"yaml":            {"rules: [\n", `line`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse = %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestWatchedReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("rules:\n  - users: [bob]\n    repos: [\"**\"]\n    allow: [pull]\n")
	w, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	bob := auth.Identity{User: "bob"}
	if !w.Authorize(bob, "x", auth.Pull) {
		t.Fatal("bob may not pull")
	}
	write("rules: []\n")
	deadline := time.Now().Add(5 * time.Second)
	for w.Authorize(bob, "x", auth.Pull) {
		if time.Now().After(deadline) {
			t.Fatal("the changed policy was not in effect within 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "none"), nil); err == nil || !strings.Contains(err.Error(), "--auth-policy") {
		t.Fatalf("Open(missing) = %v, want an error naming --auth-policy", err)
	}
}
