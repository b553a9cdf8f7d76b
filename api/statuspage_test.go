package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/api/ui"
	"github.com/meshreg/meshreg/internal/bytesize"
)

// repoNames lists the repositories a status page shows, in order.
func repoNames(page string) []string {
	var out []string
	for _, m := range regexp.MustCompile(`<h3 class="repo">([^<]*)</h3>`).FindAllStringSubmatch(page, -1) {
		out = append(out, m[1])
	}
	return out
}

// imageSize is the bytes a status page gives an image manifest: the
// manifest and its config and layers.
func imageSize(t *testing.T, m []byte) int64 {
	t.Helper()
	var man ocispec.Manifest
	if err := json.Unmarshal(m, &man); err != nil {
		t.Fatal(err)
	}
	n := int64(len(m)) + man.Config.Size
	for _, l := range man.Layers {
		n += l.Size
	}
	return n
}

// TestStatusPage pushes an image and an index of two images sharing a
// layer and reads the page: it is HTML under a strict CSP, shows this node
// as the leader, the repositories with their tags and sizes (the index
// counts the shared layer once), and pages through the repositories.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)

	app := r.image("team/app", "app")
	resp, body := r.pushManifest("team/app", "v1", ocispec.MediaTypeImageManifest, app)
	expect(t, resp, body, 201, "")

	shared := randomBytes(t, 8192)
	sharedD := r.pushBlob("team/multi", shared)
	var children []ocispec.Descriptor
	var want int64
	for _, arch := range []string{"amd64", "arm64"} {
		cfg := []byte(`{"architecture":"` + arch + `","os":"linux"}`)
		m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
			Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: r.pushBlob("team/multi", cfg), Size: int64(len(cfg))},
			Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayer, Digest: sharedD, Size: int64(len(shared))}}}
		m.SchemaVersion = 2
		b, _ := json.Marshal(m)
		d := digest.FromBytes(b)
		resp, body := r.pushManifest("team/multi", d.String(), ocispec.MediaTypeImageManifest, b)
		expect(t, resp, body, 201, "")
		children = append(children, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(b)),
			Platform: &ocispec.Platform{OS: "linux", Architecture: arch}})
		want += int64(len(b)) + int64(len(cfg))
	}
	idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: children}
	idx.SchemaVersion = 2
	idxBody, _ := json.Marshal(idx)
	resp, body = r.pushManifest("team/multi", "latest", ocispec.MediaTypeImageIndex, idxBody)
	expect(t, resp, body, 201, "")
	want += int64(len(idxBody)) + int64(len(shared))

	resp, body = r.do("GET", "/_meshreg/v1/status", nil)
	expect(t, resp, body, 200, "")
	var st struct {
		NodeID string `json:"node_id"`
	}
	if err := json.Unmarshal(body, &st); err != nil || st.NodeID == "" {
		t.Fatalf("status %s: %v", body, err)
	}

	resp, body = r.do("GET", "/_meshreg/ui/", nil)
	expect(t, resp, body, 200, "")
	page := string(body)
	for h, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Content-Security-Policy": ui.ContentSecurityPolicy,
		"X-Content-Type-Options":  "nosniff",
		"Cache-Control":           "no-store",
	} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s: %q, want %q", h, got, want)
		}
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("the CSP lets the page load things: %q", resp.Header.Get("Content-Security-Policy"))
	}
	member := regexp.MustCompile(`<tr class="member" data-id="` + st.NodeID + `">.*?</tr>`).FindString(strings.ReplaceAll(page, "\n", " "))
	for _, want := range []string{"voter", ">alive<", ">leader<", ">this node<"} {
		if !strings.Contains(member, want) {
			t.Errorf("this node's row %q lacks %q", member, want)
		}
	}
	if got := repoNames(page); fmt.Sprint(got) != "[team/app team/multi]" {
		t.Errorf("repositories %v, want [team/app team/multi]", got)
	}
	for _, want := range []string{
		"<td>v1</td><td>image</td><td>" + bytesize.Human(imageSize(t, app)) + "</td>",
		"<td>latest</td><td>index of 2 manifests</td><td>" + bytesize.Human(want) + "</td>",
		`<meta http-equiv="refresh" content="5">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, `id="next"`) {
		t.Error("one page of two repositories links to a next page")
	}

	// Pages of one repository.
	resp, body = r.do("GET", "/_meshreg/ui/?n=1&refresh=0", nil)
	expect(t, resp, body, 200, "")
	if got := repoNames(string(body)); fmt.Sprint(got) != "[team/app]" {
		t.Errorf("first page of one: %v", got)
	}
	if strings.Contains(string(body), `http-equiv="refresh"`) {
		t.Error("refresh=0 still reloads")
	}
	next := regexp.MustCompile(`<a id="next" href="([^"]*)"`).FindStringSubmatch(string(body))
	if next == nil {
		t.Fatalf("no next page link:\n%s", body)
	}
	resp, body = r.do("GET", "/_meshreg/ui/"+strings.ReplaceAll(next[1], "&amp;", "&"), nil)
	expect(t, resp, body, 200, "")
	if got := repoNames(string(body)); fmt.Sprint(got) != "[team/multi]" {
		t.Errorf("second page of one (%s): %v", next[1], got)
	}

	// HEAD, the path without its slash, and bad parameters.
	resp, body = r.do("HEAD", "/_meshreg/ui/", nil)
	expect(t, resp, body, 200, "")
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(r.url + "/_meshreg/ui")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "/_meshreg/ui/" {
		t.Errorf("/_meshreg/ui: %d to %q, want a redirect to /_meshreg/ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, q := range []string{"n=0", "n=101", "n=x", "refresh=-1", "last=" + strings.Repeat("A", 300), "last=..%2F"} {
		resp, body := r.do("GET", "/_meshreg/ui/?"+q, nil)
		expect(t, resp, body, 400, "UNSUPPORTED")
	}
	resp, body = r.do("GET", "/_meshreg/ui/other", nil)
	expect(t, resp, body, 404, "")
}

// TestStatusPageAccess: with authentication on, the page lists only the
// repositories the client may pull, challenges a browser on ?login=1, and
// refuses wrong credentials.
func TestStatusPageAccess(t *testing.T) {
	t.Parallel()
	r, _ := authRegistry(t)
	alice, bob := r.as("alice", "alice-pw"), r.as("bob", "bob-pw")
	for _, repo := range []string{"team/app", "public/base", "secret/x"} {
		resp, body := alice.pushManifest(repo, "v1", ocispec.MediaTypeImageManifest, alice.image(repo, repo))
		expect(t, resp, body, 201, "")
	}
	for _, c := range []struct {
		who  string
		r    *registry
		want string
	}{
		{"anonymous", r, "[public/base]"},
		{"bob", bob, "[public/base team/app]"},
		{"alice", alice, "[public/base secret/x team/app]"},
	} {
		resp, body := c.r.do("GET", "/_meshreg/ui/", nil)
		expect(t, resp, body, 200, "")
		if got := fmt.Sprint(repoNames(string(body))); got != c.want {
			t.Errorf("%s sees %s, want %s", c.who, got, c.want)
		}
		if !strings.Contains(string(body), "viewing as <strong>"+c.who+"</strong>") {
			t.Errorf("the page does not say it is viewed as %s", c.who)
		}
		if !strings.Contains(string(body), `class="member"`) {
			t.Errorf("%s does not see the members (the status is open to all)", c.who)
		}
	}
	// A browser answers a Basic challenge with a login prompt.
	resp, body := r.do("GET", "/_meshreg/ui/?login=1", nil)
	expect(t, resp, body, 401, "")
	expectChallenge(t, resp)
	if !strings.Contains(string(body), "log in") {
		t.Errorf("401 body %q does not say to log in", body)
	}
	resp, body = bob.do("GET", "/_meshreg/ui/?login=1", nil)
	expect(t, resp, body, 200, "")
	resp, body = r.as("bob", "wrong").do("GET", "/_meshreg/ui/", nil)
	expect(t, resp, body, 401, "")
	expectChallenge(t, resp)
	if !strings.Contains(string(body), "wrong user name or password") {
		t.Errorf("401 body %q does not say why", body)
	}
}

// TestStatusPageBoundsItsReads fills a page with indexes (each sized by
// reading its 16 manifests) past the page's budget of manifest reads: the
// first tags get their sizes, the ones past the budget none, the page says
// so, and an index of more manifests than the page reads is not sized.
func TestStatusPageBoundsItsReads(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, t.TempDir(), nil)
	const children = 16 // api's uiIndexChildren
	index := func(repo string, n int, v string) []byte {
		cfgD := r.pushBlob(repo, []byte(`{"os":"linux"}`))
		var ds []ocispec.Descriptor
		for i := range n {
			m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
				Config:      ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgD, Size: 14},
				Layers:      []ocispec.Descriptor{},
				Annotations: map[string]string{"i": fmt.Sprint(i)}}
			m.SchemaVersion = 2
			b, _ := json.Marshal(m)
			d := digest.FromBytes(b)
			resp, body := r.pushManifest(repo, d.String(), ocispec.MediaTypeImageManifest, b)
			expect(t, resp, body, 201, "")
			ds = append(ds, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(b))})
		}
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: ds, Annotations: map[string]string{"v": v}}
		idx.SchemaVersion = 2
		b, _ := json.Marshal(idx)
		return b
	}
	// 2 repositories × 10 tags × (1 + 16) reads = 340 > 300.
	for _, repo := range []string{"a/idx", "b/idx"} {
		for i := range 10 {
			resp, body := r.pushManifest(repo, fmt.Sprintf("t%d", i), ocispec.MediaTypeImageIndex, index(repo, children, fmt.Sprint(i)))
			expect(t, resp, body, 201, "")
		}
	}
	resp, body := r.pushManifest("c/big", "wide", ocispec.MediaTypeImageIndex, index("c/big", children+1, "wide"))
	expect(t, resp, body, 201, "")

	start := time.Now()
	resp, body = r.do("GET", "/_meshreg/ui/", nil)
	took := time.Since(start)
	expect(t, resp, body, 200, "")
	t.Logf("a page of 3 repositories, 21 indexes, 300 manifest reads: %s, %d bytes", took.Round(time.Millisecond), len(body))
	sized := regexp.MustCompile(`<tr class="tagrow"><td>([^<]+)</td><td>.*?</td><td>(.*?)</td>`).FindAllStringSubmatch(string(body), -1)
	if len(sized) != 21 {
		t.Fatalf("%d index rows, want 21:\n%s", len(sized), body)
	}
	var withSize []string
	for _, m := range sized {
		if !strings.Contains(m[2], "—") {
			withSize = append(withSize, m[1])
		}
	}
	// 300 reads size 17 indexes (289 reads); the 18th runs out, and the
	// tags after it are not read at all.
	if got := fmt.Sprint(withSize); got != "[t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 t0 t1 t2 t3 t4 t5 t6]" {
		t.Errorf("tags with a size: %s", got)
	}
	if !strings.Contains(string(body), "Some sizes (—) were not computed") {
		t.Error("the page does not say sizes were left out")
	}

	// The wide index alone, on a page of its own: too many manifests to size.
	resp, body = r.do("GET", "/_meshreg/ui/?last=b/idx", nil)
	expect(t, resp, body, 200, "")
	if !regexp.MustCompile(`<td>wide</td><td>index of 17 manifests</td><td><span class="muted">—</span></td>`).Match(body) {
		t.Errorf("the index of 17 manifests has a size:\n%s", body)
	}
}

// TestStatusPageLoginWithTokens: with the token service on, /v2/ challenges
// with Bearer, which a browser cannot follow; the status page challenges
// with Basic, so the browser's login prompt works, and a bearer token
// works too.
func TestStatusPageLoginWithTokens(t *testing.T) {
	t.Parallel()
	r, _, _ := tokenRegistry(t, testKeys(t), "")
	alice := r.as("alice", "alice-pw")
	resp, body := alice.pushManifest("secret/x", "v1", ocispec.MediaTypeImageManifest, alice.image("secret/x", "x"))
	expect(t, resp, body, 201, "")

	resp, body = r.do("GET", "/_meshreg/ui/?login=1", nil)
	expect(t, resp, body, 401, "")
	expectChallenge(t, resp)
	for name, c := range map[string]*registry{"basic": alice, "bearer": r.bearer(tokenFor(t, r, "alice", "registry:catalog:*"))} {
		resp, body = c.do("GET", "/_meshreg/ui/?login=1", nil)
		expect(t, resp, body, 200, "")
		if got := fmt.Sprint(repoNames(string(body))); got != "[secret/x]" {
			t.Errorf("alice (%s) sees %s, want [secret/x]", name, got)
		}
	}
	// A token without the catalog scope lists nothing, as /v2/_catalog.
	resp, body = r.bearer(tokenFor(t, r, "alice", "repository:secret/x:pull")).do("GET", "/_meshreg/ui/", nil)
	expect(t, resp, body, 200, "")
	if got := repoNames(string(body)); len(got) != 0 || !strings.Contains(string(body), "scope registry:catalog:*") {
		t.Errorf("a token without the catalog scope sees %v", got)
	}
}

// tokenFor gets a token for user (password user-pw) with scopes.
func tokenFor(t *testing.T, r *registry, user string, scopes ...string) string {
	t.Helper()
	_, body, tok := getToken(t, r.as(user, user+"-pw"), scopes...)
	if tok == "" {
		t.Fatalf("no token for %s: %s", user, body)
	}
	return tok
}
