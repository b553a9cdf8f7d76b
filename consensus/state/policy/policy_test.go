package policy

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const doc = `
rules:
  - repositories: [team/**]
    exclude: [team/scratch]
    immutable:
      tags: ["v*"]
      exclude: [v-dev]
    quota: 10MiB
  - repositories: [ci/*]
    retention:
      tags: ["ci-*"]
      exclude: [ci-keep]
      keepLast: 2
      deleteUntaggedAfter: 7d
`

func TestParseAndMatch(t *testing.T) {
	p, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		repo, tag string
		immutable bool
		quota     int64
	}{
		{"team/app", "v1", true, 10 << 20},
		{"team", "v1", true, 10 << 20},
		{"team/app", "v-dev", false, 10 << 20},
		{"team/app", "latest", false, 10 << 20},
		{"team/scratch", "v1", false, 0},
		{"ci/app", "v1", false, 0},
		{"other", "v1", false, 0},
	}
	for _, c := range cases {
		if got := p.Immutable(c.repo, c.tag) != nil; got != c.immutable {
			t.Errorf("Immutable(%s, %s) = %v, want %v", c.repo, c.tag, got, c.immutable)
		}
		var q int64
		if r := p.Quota(c.repo); r != nil {
			q = r.Quota
		}
		if q != c.quota {
			t.Errorf("Quota(%s) = %d, want %d", c.repo, q, c.quota)
		}
	}
	if r := p.For("ci/app"); r == nil || r.N != 2 || r.Retention.KeepLast != 2 || r.Retention.DeleteUntaggedAfter != 7*24*time.Hour {
		t.Errorf("For(ci/app) = %+v", r)
	}
	if p, err := Parse([]byte("rules: []")); err != nil || len(p.Rules) != 0 {
		t.Errorf("empty rules: %v %v", p, err)
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	cases := []struct{ name, doc, want string }{
		{"empty", "", "document is empty"},
		{"no rules", "rule: []", `line 1: the document: unknown key "rule" (did you mean rules?)`},
		{"unknown rule key", "rules:\n  - repositories: [a]\n    qouta: 1GiB\n", `line 3: rule 1: unknown key "qouta" (did you mean quota?)`},
		{"unknown retention key", "rules:\n  - repositories: [a]\n    retention:\n      keeplast: 3\n", `line 4: rule 1: retention: unknown key "keeplast" (did you mean keepLast?)`},
		{"no repositories", "rules:\n  - quota: 1GiB\n", "line 2: rule 1 names no repositories"},
		{"bad glob", "rules:\n  - repositories: [a/**b]\n    quota: 1GiB\n", "line 2: rule 1: repositories: repository glob"},
		{"bad quota", "rules:\n  - repositories: [a]\n    quota: lots\n", `line 3: rule 1: quota "lots" is not a size`},
		{"zero quota", "rules:\n  - repositories: [a]\n    quota: 0\n", `quota "0" is not a size`},
		{"bad age", "rules:\n  - repositories: [a]\n    retention:\n      deleteTagsAfter: soon\n", `line 4: rule 1: retention deleteTagsAfter "soon" is not an age`},
		{"negative keep", "rules:\n  - repositories: [a]\n    retention:\n      keepLast: -1\n", `line 4: rule 1: keepLast "-1"`},
		{"retention of nothing", "rules:\n  - repositories: [a]\n    retention:\n      tags: [x]\n", "retention deletes nothing"},
		{"rule of nothing", "rules:\n  - repositories: [a]\n", "rule 1 sets nothing"},
		{"bad tag pattern", "rules:\n  - repositories: [a]\n    immutable:\n      tags: ['[']\n", `line 4: rule 1: immutable: tags: "[" is not a tag pattern`},
		{"not yaml", "rules: [", "policy: yaml:"},
		{"too many rules", "rules:\n" + strings.Repeat("  - {repositories: [a], quota: 1}\n", MaxRules+1), "at most 100"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.doc))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse = %v, want an error with %q", err, c.want)
			}
		})
	}
}

func TestSizesAndAges(t *testing.T) {
	for s, want := range map[string]int64{"1": 1, "10B": 10, "2kB": 2000, "3MiB": 3 << 20, "1GiB": 1 << 30, "1 GB": 1e9, "1.5GiB": 3 << 29} {
		if got, err := parseSize(s); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "-1", "0", "1e3", "99999999999TiB", "GiB"} {
		if _, err := parseSize(s); err == nil {
			t.Errorf("parseSize(%q) accepted", s)
		}
	}
	for s, want := range map[string]time.Duration{"7d": 7 * 24 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := parseAge(s); err != nil || got != want {
			t.Errorf("parseAge(%q) = %s, %v; want %s", s, got, err, want)
		}
	}
	for _, s := range []string{"", "0s", "-1h", "1y", "999999d"} {
		if _, err := parseAge(s); err == nil {
			t.Errorf("parseAge(%q) accepted", s)
		}
	}
}

func TestRetentionSelect(t *testing.T) {
	p, err := Parse([]byte(`
rules:
  - repositories: [ci/**]
    immutable:
      tags: [release-*]
    retention:
      tags: ["ci-*", "release-*", "old-*"]
      exclude: [ci-pinned]
      keepLast: 2
      deleteTagsAfter: 30d
      deleteUntaggedAfter: 7d
`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	tags := []TagInfo{
		{Tag: "ci-1", Digest: "sha256:1", Index: 10, Time: now.Add(-5 * day)},
		{Tag: "ci-2", Digest: "sha256:2", Index: 20, Time: now.Add(-4 * day)},
		{Tag: "ci-3", Digest: "sha256:3", Index: 30, Time: now.Add(-3 * day)},
		{Tag: "ci-4", Digest: "sha256:4", Index: 40, Time: now.Add(-2 * day)},
		{Tag: "ci-pinned", Digest: "sha256:1", Index: 5, Time: now.Add(-90 * day)},
		{Tag: "release-1", Digest: "sha256:1", Index: 6, Time: now.Add(-90 * day)},
		{Tag: "latest", Digest: "sha256:4", Index: 41, Time: now.Add(-90 * day)},
	}
	manifests := []ManifestInfo{
		{Digest: "sha256:a", Time: now.Add(-8 * day)},                   // goes
		{Digest: "sha256:b", Time: now.Add(-6 * day)},                   // too young
		{Digest: "sha256:c", Time: now.Add(-8 * day), Tagged: true},     // tagged
		{Digest: "sha256:d", Time: now.Add(-8 * day), Referenced: true}, // a referrer or child
		{Digest: "sha256:e"}, // age unknown
	}
	got := p.For("ci/app").Select("ci/app", tags, manifests, now)
	var names []string
	for _, d := range got {
		names = append(names, d.Tag+"@"+string(d.Digest))
	}
	want := []string{"ci-2@sha256:2", "ci-1@sha256:1", "@sha256:a"}
	if !slices.Equal(names, want) {
		t.Fatalf("Select = %v, want %v", names, want)
	}
	if !strings.Contains(got[0].Reason, "policy rule 1 keeps the last 2 tags") {
		t.Errorf("reason %q", got[0].Reason)
	}

	// Age alone: a tag older than deleteTagsAfter goes though within keepLast.
	p2, _ := Parse([]byte("rules:\n  - repositories: [a]\n    retention:\n      deleteTagsAfter: 1h\n"))
	got = p2.For("a").Select("a", []TagInfo{
		{Tag: "new", Index: 2, Time: now.Add(-time.Minute)},
		{Tag: "old", Index: 1, Time: now.Add(-2 * time.Hour)},
		{Tag: "unknown", Index: 0},
	}, nil, now)
	if len(got) != 1 || got[0].Tag != "old" {
		t.Fatalf("Select by age = %+v, want only old", got)
	}
}
