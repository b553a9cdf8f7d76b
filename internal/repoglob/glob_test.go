package repoglob

import (
	"strings"
	"testing"
	"time"
)

func TestRepoGlob(t *testing.T) {
	for _, c := range []struct {
		glob, repo string
		want       bool
	}{
		{"team/*", "team/app", true},
		{"team/*", "team/app/x", false},
		{"team/**", "team", true},
		{"team/**", "team/a/b/c", true},
		{"**/cache", "a/b/cache", true},
		{"**/**/cache", "cache", true},
		{"a/**/b", "a/x/y/b", true},
		{"a/**/b", "a/x/y/c", false},
	} {
		g, err := ParseRepoGlob(c.glob)
		if err != nil {
			t.Fatalf("ParseRepoGlob(%q): %v", c.glob, err)
		}
		if got := g.Match(strings.Split(c.repo, "/")); got != c.want {
			t.Errorf("%q matches %q = %v, want %v", c.glob, c.repo, got, c.want)
		}
	}
	for _, bad := range []string{"", "a//b", "a**", "a/[/b"} {
		if _, err := ParseRepoGlob(bad); err == nil {
			t.Errorf("ParseRepoGlob(%q) accepted", bad)
		}
	}
}

// A repository name is the client's choice: a glob of many ** segments
// must not make a long name cost exponential time to refuse.
func TestRepoGlobRepeatedStarsStayCheap(t *testing.T) {
	g, err := ParseRepoGlob(strings.Repeat("**/", 20) + "x")
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != 2 {
		t.Errorf("consecutive ** kept as %d segments, want 2", len(g))
	}
	repo := strings.Split(strings.Repeat("a/", 120)+"b", "/")
	done := make(chan bool, 1)
	go func() { done <- g.Match(repo) }()
	select {
	case got := <-done:
		if got {
			t.Error("matched a name that does not end in x")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("matching a 121-segment name did not finish within 10 s")
	}
}
