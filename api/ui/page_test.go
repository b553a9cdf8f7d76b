package ui_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api/ui"
)

// fakeStatus is a status document as node.Status serves it, for a member
// of three: itself (leader, eu/a), a live follower (eu/b) and one not
// heard from for a minute (us, no zone).
func fakeStatus(t *testing.T, now time.Time, region string) []byte {
	t.Helper()
	doc := map[string]any{
		"node_id": "12D3KooWSelf", "version": "v1.2.3", "uptime": "1h0m0s",
		"region": region, "zone": "a", "replicas": 2, "uploads_in_progress": 1,
		"build": map[string]any{"commit": "0123456789abcdef0123456789abcdef01234567", "platform": "linux/amd64"},
		"blobs": map[string]any{"count": 7, "bytes": 3 << 20, "under_replicated": 2, "corrupt": 0},
		"raft": map[string]any{
			"state": "Leader", "leader_id": "12D3KooWSelf", "term": 4, "commit_index": 99, "applied_index": 99,
			"members": []map[string]any{
				{"id": "12D3KooWSelf", "address": "/ip4/127.0.0.1/tcp/1", "suffrage": "Voter"},
				{"id": "12D3KooWLive", "address": "/ip4/127.0.0.1/tcp/2", "suffrage": "Voter"},
				{"id": "12D3KooWGone", "address": "/ip4/127.0.0.1/tcp/3", "suffrage": "Nonvoter"},
			},
		},
		"peers": []map[string]any{
			{"id": "12D3KooWLive", "region": region, "zone": "b"},
			{"id": "12D3KooWGone", "region": "us"},
		},
		"member_last_contact": map[string]any{
			"12D3KooWLive": now.Add(-2 * time.Second),
			"12D3KooWGone": now.Add(-time.Minute),
		},
		"disk":          map[string]any{"free_bytes": 10 << 30, "total_bytes": 40 << 30, "reserve_bytes": 1 << 30},
		"upstreams":     []map[string]any{{"name": "hub", "url": "https://registry-1.docker.io", "last_error": "401 <b>nope</b>", "last_error_at": now.Add(-time.Second)}},
		"something_new": map[string]any{"the page": "ignores it"},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func render(t *testing.T, p ui.Page) string {
	t.Helper()
	var b bytes.Buffer
	if err := ui.Render(&b, p); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestMembersGroupedByRegionAndZone(t *testing.T) {
	now := time.Now()
	st, err := ui.DecodeStatus(fakeStatus(t, now, "eu"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range (ui.Page{Now: now, Status: st}).Members() {
		for _, z := range r.Zones {
			for _, m := range z.Members {
				got = append(got, strings.Join([]string{r.Name, z.Name, m.ID, m.Suffrage, m.Health,
					map[bool]string{true: "leader"}[m.Leader], map[bool]string{true: "self"}[m.Self]}, " "))
			}
		}
	}
	want := []string{
		"eu a 12D3KooWSelf voter alive leader self",
		"eu b 12D3KooWLive voter alive  ",
		"us (none) 12D3KooWGone nonvoter dead  ",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("members:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestPageShowsTheStatus(t *testing.T) {
	now := time.Now()
	st, err := ui.DecodeStatus(fakeStatus(t, now, "eu"))
	if err != nil {
		t.Fatal(err)
	}
	out := render(t, ui.Page{Now: now, Status: st, First: true, Refresh: 5, RefreshToggle: "?refresh=0",
		Repos: []ui.Repo{{Name: "team/app", Tags: []ui.Tag{{Name: "v1", Kind: "image", Digest: "sha256:abc", Size: 5 << 20}, {Name: "v2", Size: -1}}, MoreTags: true}},
		Next:  "?last=team%2Fapp&n=1"})
	for _, want := range []string{
		`<meta http-equiv="refresh" content="5">`,
		`data-id="12D3KooWSelf"`, `data-id="12D3KooWLive"`, `data-id="12D3KooWGone"`,
		`<span class="tag leader">leader</span>`, `<span class="tag self">this node</span>`,
		`<span class="tag dead">dead</span>`,
		`<th colspan="5">Region eu</th>`, `<th colspan="5">Region us</th>`, `<td colspan="5">zone a</td>`, `<td colspan="5">zone b</td>`, `<td colspan="5">zone (none)</td>`,
		"v1.2.3", "2 blobs</span> with fewer live copies", "no budget set", "10.0 GiB free of 40.0 GiB (25.0% free)",
		`id="upstreams"`, "https://registry-1.docker.io",
		`<h3 class="repo">team/app</h3>`, "<td>v1</td>", "5.0 MiB", `href="/v2/team/app/tags/list"`,
		`<a id="next" href="?last=team%2Fapp&amp;n=1">`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Count(out, `<span class="tag leader">`) != 1 {
		t.Errorf("the leader is marked %d times, want once", strings.Count(out, `<span class="tag leader">`))
	}
}

// TestPageShowsTheDiskBudget: with --max-disk the Disk section shows the
// blob bytes against the budget, the low-water mark, and why new blobs are
// refused when they are.
func TestPageShowsTheDiskBudget(t *testing.T) {
	now := time.Now()
	st, err := ui.DecodeStatus(fakeStatus(t, now, "eu"))
	if err != nil {
		t.Fatal(err)
	}
	st.Disk.BudgetBytes, st.Disk.LowWaterBytes, st.Disk.UsedBytes = 8<<20, 7<<20, 6<<20
	out := render(t, ui.Page{Now: now, Status: st, First: true})
	if want := "6.0 MiB of 8.0 MiB (75.0%); evicts down to 7.0 MiB</td>"; !strings.Contains(out, want) {
		t.Errorf("page lacks %q", want)
	}
	if strings.Contains(out, "no budget set") || strings.Contains(out, "new blobs refused") {
		t.Error("page says no budget, or that new blobs are refused")
	}
	st.Disk.OverBudget = "only 0 other live nodes"
	if out := render(t, ui.Page{Now: now, Status: st, First: true}); !strings.Contains(out, `<span class="bad">new blobs refused: only 0 other live nodes</span>`) {
		t.Error("page does not say why new blobs are refused")
	}
}

// TestPageEscapes renders names a client or peer chose (a repository, a
// tag, a region label, an upstream's error) holding markup: the page shows
// them as text and runs nothing.
func TestPageEscapes(t *testing.T) {
	now := time.Now()
	const evil = `<script>alert(1)</script>`
	st, err := ui.DecodeStatus(fakeStatus(t, now, evil))
	if err != nil {
		t.Fatal(err)
	}
	out := render(t, ui.Page{Now: now, Status: st, Viewer: `"><img src=x onerror=alert(1)>`, First: true,
		Repos: []ui.Repo{{Name: "a/" + evil, Tags: []ui.Tag{{Name: evil, Size: 1}}, MoreTags: true, Error: ""}}})
	if regexp.MustCompile(`(?i)<script|<img|<b>`).MatchString(out) {
		t.Errorf("page has markup from the data:\n%s", out)
	}
	for _, want := range []string{"Region &lt;script&gt;alert(1)&lt;/script&gt;", `<h3 class="repo">a/&lt;script&gt;`, "401 &lt;b&gt;nope&lt;/b&gt;", "&lt;img src=x"} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks the escaped %q", want)
		}
	}
	if !strings.Contains(out, `href="/v2/a/%3cscript%3ealert%281%29%3c/script%3e/tags/list"`) {
		t.Errorf("the tag list link is not escaped as a URL:\n%s", out)
	}
}

func TestDecodeStatusRejectsJunk(t *testing.T) {
	if _, err := ui.DecodeStatus([]byte("<html>")); err == nil {
		t.Fatal("decoding a non-JSON status succeeded")
	}
}
