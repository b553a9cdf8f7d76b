package testnet_test

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

const envRequireChromium = "REQUIRE_CHROMIUM"

// requireChromium returns the path of Debian's chromium; when it is
// missing it skips the test, or fails it when REQUIRE_CHROMIUM=1.
func requireChromium(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium in PATH (apt-get install chromium); " + envRequireChromium + "=1 makes this a failure"
	if os.Getenv(envRequireChromium) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// chromium runs headless Chromium on url with args (--dump-dom,
// --screenshot=…) and returns what it printed on stdout.
func chromium(t *testing.T, bin, url string, args ...string) []byte {
	t.Helper()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
		"--disable-background-networking", "--disable-sync", "--metrics-recording-only", "--no-default-browser-check",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,1400"}, args...)
	res := testnet.Cmd{Path: bin, Args: append(all, url), Timeout: 90 * time.Second, Environ: []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}}.Run(t.Context())
	if res.Err != nil {
		t.Fatalf("%s: %v (took %s)\nstderr: %s", filepath.Base(bin), res.Err, res.Duration.Round(time.Millisecond), res.Stderr)
	}
	t.Logf("chromium %s: %s", strings.Join(args, " "), res.Duration.Round(time.Millisecond))
	return res.Stdout
}

// TestStatusPageInChromium starts a 3-node cluster over two regions and
// three zones, pushes an image, and loads a follower's status page in
// headless Chromium: the rendered page lists the three members by region
// and zone, alive, marks the leader's row and the follower's own, and
// shows the repository with its tag and size; once the other follower is
// killed, it shows that one dead.
func TestStatusPageInChromium(t *testing.T) {
	testnet.RequireProcess(t)
	bin := requireChromium(t)
	out, err := exec.CommandContext(t.Context(), bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v: %s", bin, err, out)
	}
	// Debian's wrapper script may print a shell warning before the version.
	t.Logf("%s", strings.TrimSpace(string(out[strings.LastIndex(strings.TrimSpace(string(out)), "\n")+1:])))

	labels := [][2]string{{"eu-west", "eu-west-a"}, {"eu-west", "eu-west-b"}, {"us-east", "us-east-a"}}
	args := func(i int) []string {
		return []string{"--stabilization-time", testnet.HarnessStabilization.String(), "--region", labels[i][0], "--zone", labels[i][1]}
	}
	first := testnet.StartNode(t, testnet.Options{Args: args(0)})
	nodes := []*testnet.Node{first}
	token := testnet.JoinToken(t, first, time.Hour)
	for i := 1; i < 3; i++ {
		nodes = append(nodes, testnet.StartNode(t, testnet.Options{Args: append(args(i), "--join", first.URL(), "--join-token", token)}))
	}
	testnet.WaitConverged(t, nodes, 3, 3, 60*time.Second)
	leader, followers := testnet.Leader(t, nodes, 10*time.Second)
	viewed := followers[0]

	ctx := t.Context()
	c := testnet.NewClient(viewed.URL())
	const repo, tag = "e2e/statuspage", "v1"
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := []byte(strings.Repeat("meshreg status page ", 5000)) // 100,000 bytes
	cfgD, err := c.PushBytes(ctx, repo, cfg)
	if err != nil {
		t.Fatalf("push config: %v", err)
	}
	layerD, err := c.PushBytes(ctx, repo, layer)
	if err != nil {
		t.Fatalf("push layer: %v", err)
	}
	m, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgD, Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: layerD, Size: int64(len(layer))}}})
	if _, err := c.PutManifest(ctx, repo, tag, ocispec.MediaTypeImageManifest, m); err != nil {
		t.Fatalf("push manifest through %s: %v", viewed.Host(), err)
	}
	// 100,000 + the config + the manifest: 98.x KiB.
	wantSize := regexp.MustCompile(`^98\.\d KiB$`)

	ids := map[*testnet.Node]string{}
	for _, n := range nodes {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatalf("status of %s: %v", n.Host(), err)
		}
		ids[n] = st.NodeID
	}
	pageURL := viewed.URL() + "/_meshreg/ui/"
	// The follower sees every member alive once it has had a connection
	// to each (checked every second): wait for that over plain HTTP.
	alive := func() bool {
		code, _, body, err := c.Get(ctx, "/_meshreg/ui/?refresh=0", nil)
		return err == nil && code == http.StatusOK && strings.Count(string(body), `<span class="tag alive">alive</span>`) == 3
	}
	if !testnet.Eventually(20*time.Second, alive) {
		_, _, body, _ := c.Get(ctx, "/_meshreg/ui/?refresh=0", nil)
		t.Fatalf("the page of %s does not show 3 members alive within 20 s:\n%s", viewed.Host(), body)
	}

	dom := string(chromium(t, bin, pageURL, "--dump-dom"))
	flat := strings.Join(strings.Fields(dom), " ")
	rows := map[string]string{}
	for _, m := range regexp.MustCompile(`<tr class="member" data-id="([^"]+)">(.*?)</tr>`).FindAllStringSubmatch(flat, -1) {
		rows[m[1]] = m[2]
	}
	for i, n := range nodes {
		row, ok := rows[ids[n]]
		if !ok {
			t.Errorf("the rendered page lists no member %s (%s):\n%s", ids[n], n.Host(), dom)
			continue
		}
		for _, want := range []string{"voter", `<span class="tag alive">alive</span>`} {
			if !strings.Contains(row, want) {
				t.Errorf("member %d (%s) row %q lacks %q", i, n.Host(), row, want)
			}
		}
		if got, want := strings.Contains(row, `<span class="tag leader">leader</span>`), n == leader; got != want {
			t.Errorf("member %d (%s) marked leader: %v, want %v", i, n.Host(), got, want)
		}
		if got, want := strings.Contains(row, `<span class="tag self">this node</span>`), n == viewed; got != want {
			t.Errorf("member %d (%s) marked as this node: %v, want %v", i, n.Host(), got, want)
		}
	}
	if len(rows) != 3 {
		t.Errorf("the rendered page lists %d members, want 3", len(rows))
	}
	// Regions in order, each with its zones.
	heads := regexp.MustCompile(`<th colspan="5">Region ([^<]+)</th>|<td colspan="5">zone ([^<]+)</td>`).FindAllStringSubmatch(flat, -1)
	var order []string
	for _, h := range heads {
		order = append(order, h[1]+h[2])
	}
	if got := strings.Join(order, ","); got != "eu-west,eu-west-a,eu-west-b,us-east,us-east-a" {
		t.Errorf("regions and zones in the page: %s", got)
	}
	repoRow := regexp.MustCompile(`<h3 class="repo">` + regexp.QuoteMeta(repo) + `</h3> <table class="tags">.*?<tr class="tagrow"><td>` + tag + `</td><td>image</td><td>([^<]+)</td>`).FindStringSubmatch(flat)
	if repoRow == nil {
		t.Errorf("the rendered page does not list %s:%s as an image:\n%s", repo, tag, dom)
	} else if !wantSize.MatchString(repoRow[1]) {
		t.Errorf("%s:%s size %q, want 98.x KiB", repo, tag, repoRow[1])
	}

	// A screenshot: Chromium lays the page out and paints it.
	shot := filepath.Join(t.TempDir(), "statuspage.png")
	if keep := os.Getenv("MESHREG_E2E_SCREENSHOT"); keep != "" {
		shot = keep
	}
	chromium(t, bin, pageURL, "--screenshot="+shot, "--hide-scrollbars")
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	if len(png) < 10_000 || string(png[1:4]) != "PNG" {
		t.Errorf("screenshot %s: %d bytes, not a painted PNG", shot, len(png))
	}

	// The other follower killed: the page shows it dead once its last
	// contact is older than 10 s, the others still alive.
	gone := followers[1]
	gone.Kill()
	killed := time.Now()
	row := func() string {
		_, _, body, err := c.Get(ctx, "/_meshreg/ui/?refresh=0", nil)
		if err != nil {
			return ""
		}
		return regexp.MustCompile(`<tr class="member" data-id="` + ids[gone] + `">(.*?)</tr>`).FindString(strings.Join(strings.Fields(string(body)), " "))
	}
	if !testnet.Eventually(25*time.Second, func() bool { return strings.Contains(row(), `<span class="tag dead">dead</span>`) }) {
		t.Fatalf("25 s after a SIGKILL, %s's row on %s is %q, want dead", gone.Host(), viewed.Host(), row())
	}
	t.Logf("a killed member shows dead after %s", time.Since(killed).Round(100*time.Millisecond))
	dom = strings.Join(strings.Fields(string(chromium(t, bin, pageURL, "--dump-dom"))), " ")
	if n := strings.Count(dom, `<span class="tag alive">alive</span>`); n != 2 {
		t.Errorf("after one of three was killed, the rendered page shows %d members alive, want 2", n)
	}
}
