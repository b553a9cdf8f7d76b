package testnet_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/meshreg/meshreg/testnet"
)

// hookEvent is the part of a Distribution notification event the test
// reads.
type hookEvent struct {
	ID     string `json:"id"`
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	} `json:"target"`
	Source struct {
		InstanceID string `json:"instanceID"`
	} `json:"source"`
}

// hookReceiver is the webhook endpoint the test runs: it checks each
// envelope's signature, answers 500 while down, and records what it
// accepted, in arrival order.
type hookReceiver struct {
	t      *testing.T
	secret string
	mu     sync.Mutex
	down   bool
	failed int
	events []hookEvent
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	mac := hmac.New(sha256.New, []byte(h.secret))
	mac.Write(body)
	if got, want := r.Header.Get("X-Meshreg-Signature"), "sha256="+hex.EncodeToString(mac.Sum(nil)); got != want {
		h.t.Errorf("X-Meshreg-Signature %q, want %q", got, want)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/vnd.docker.distribution.events.v2+json" {
		h.t.Errorf("Content-Type %q", ct)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		h.failed++
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var env struct {
		Events []hookEvent `json:"events"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		h.t.Errorf("envelope: %v: %s", err, body)
	}
	h.events = append(h.events, env.Events...)
}

func (h *hookReceiver) setDown(down bool) {
	h.mu.Lock()
	h.down = down
	h.mu.Unlock()
}

func (h *hookReceiver) snapshot() ([]hookEvent, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookEvent(nil), h.events...), h.failed
}

// waitEvents waits until the receiver holds n events with distinct ids.
func (h *hookReceiver) waitEvents(t *testing.T, n int, timeout time.Duration) []hookEvent {
	t.Helper()
	var evs []hookEvent
	ok := testnet.Eventually(timeout, func() bool {
		evs, _ = h.snapshot()
		return len(dedup(evs)) >= n
	})
	if !ok {
		t.Fatalf("the receiver got %d distinct events, want %d: %+v", len(dedup(evs)), n, evs)
	}
	return evs
}

// dedup keeps the first event of each id, as a receiver would.
func dedup(evs []hookEvent) []hookEvent {
	seen := map[string]bool{}
	var out []hookEvent
	for _, e := range evs {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out
}

// notificationsPending reads the pending count of endpoint from a
// node's status document.
func notificationsPending(t *testing.T, n *testnet.Node, endpoint string) int {
	t.Helper()
	resp, err := n.HTTPClient().Get(n.URL() + "/_meshreg/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Notifications *struct {
			Endpoints []struct {
				Name    string `json:"name"`
				Pending int    `json:"pending"`
			} `json:"endpoints"`
		} `json:"notifications"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Notifications == nil {
		t.Fatalf("status without a notifications section: %v", err)
	}
	for _, e := range st.Notifications.Endpoints {
		if e.Name == endpoint {
			return e.Pending
		}
	}
	t.Fatalf("status names no endpoint %s", endpoint)
	return 0
}

// TestNotificationsCluster: a webhook receiver the test starts sees each
// manifest push of a 3-node cluster once, sent by the node that took it
// (pushes through nodes 1 and 3); while it answers 500 the events wait
// and arrive later in push order; events queued on a node that is killed
// while the receiver is down arrive after that node restarts, none lost
// and none twice.
func TestNotificationsCluster(t *testing.T) {
	testnet.RequireProcess(t)
	rc := &hookReceiver{t: t, secret: "webhook-secret"}
	srv := httptest.NewServer(rc) // 127.0.0.1
	defer srv.Close()
	file := filepath.Join(t.TempDir(), "notifications.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`endpoints:
  - name: hook
    url: %s/events
    secret: webhook-secret
    backoff: 100ms
    maxbackoff: 400ms
    ignoredmediatypes: [application/octet-stream]   # manifests only
`, srv.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	nodes := testnet.StartCluster(t, 3, testnet.Options{Args: []string{"--notifications", file}})
	ctx := t.Context()
	ids := map[*testnet.Node]string{}
	for _, n := range nodes {
		st, err := n.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[n] = st.NodeID
	}
	n1, n3 := nodes[0], nodes[2]
	type pushed struct{ node, tag, digest string }
	var want []pushed
	pushN := func(n *testnet.Node, prefix string, count int) {
		t.Helper()
		c := testnet.NewClient(n.URL())
		img := smallImage(t, c, "hooks/app")
		for i := range count {
			tag := fmt.Sprintf("%s-%d", prefix, i)
			d, err := c.PutManifest(ctx, "hooks/app", tag, ocispec.MediaTypeImageManifest, img(tag))
			if err != nil {
				t.Fatalf("push %s through %s: %v", tag, n.Host(), err)
			}
			want = append(want, pushed{ids[n], tag, d.String()})
		}
	}
	// check asserts the receiver holds exactly want (after dedup by id),
	// each push once, in push order per node, and reports duplicates.
	check := func(evs []hookEvent) (dups int) {
		t.Helper()
		uniq := dedup(evs)
		dups = len(evs) - len(uniq)
		if len(uniq) != len(want) {
			t.Fatalf("the receiver has %d distinct events, want %d: %+v", len(uniq), len(want), uniq)
		}
		byTag := map[string]hookEvent{}
		order := map[string][]string{}
		for _, e := range uniq {
			if _, twice := byTag[e.Target.Tag]; twice {
				t.Fatalf("push of %s reported twice under different ids", e.Target.Tag)
			}
			byTag[e.Target.Tag] = e
			order[e.Source.InstanceID] = append(order[e.Source.InstanceID], e.Target.Tag)
		}
		wantOrder := map[string][]string{}
		for _, p := range want {
			e, ok := byTag[p.tag]
			if !ok {
				t.Fatalf("no event for the push of %s", p.tag)
			}
			if e.Action != "push" || e.Target.Digest != p.digest || e.Target.Repository != "hooks/app" ||
				e.Target.MediaType != ocispec.MediaTypeImageManifest || e.Source.InstanceID != p.node {
				t.Fatalf("event for %s: %+v, want a push of %s from %s", p.tag, e, p.digest, p.node)
			}
			wantOrder[p.node] = append(wantOrder[p.node], p.tag)
		}
		if fmt.Sprint(order) != fmt.Sprint(wantOrder) {
			t.Fatalf("events out of push order:\n got %v\nwant %v", order, wantOrder)
		}
		return dups
	}

	// 1. Pushes through nodes 1 and 3: each seen once, from the node that
	// took it; crane's push (blobs, then the manifest) is one event too.
	pushN(n1, "one", 10)
	pushN(n3, "three", 10)
	work := t.TempDir()
	crane := testnet.Runner{T: t, Path: testnet.Tool(t, "crane"), Dir: work, Env: []string{"HOME=" + work}}
	layer := filepath.Join(work, "layer.tar")
	if _, err := testnet.WriteLayerTar(layer, "l", 2, 64<<10); err != nil {
		t.Fatal(err)
	}
	ref := n3.Host() + "/hooks/app:crane"
	crane.Run("append", "--insecure", "--oci-empty-base", "-t", ref, "-f", layer)
	want = append(want, pushed{ids[n3], "crane", strings.TrimSpace(string(crane.Run("digest", "--insecure", ref)))})
	evs := rc.waitEvents(t, len(want), 20*time.Second)
	time.Sleep(time.Second) // anything sent twice would show up by now
	evs, _ = rc.snapshot()
	if dups := check(evs); dups != 0 {
		t.Fatalf("%d events delivered twice with the receiver up", dups)
	}

	// 2. The receiver answers 500 for a while: the events arrive later, in order.
	rc.setDown(true)
	pushN(n1, "late", 5)
	if !testnet.Eventually(10*time.Second, func() bool { _, f := rc.snapshot(); return f >= 3 }) {
		t.Fatal("the node did not retry while the receiver answered 500")
	}
	if p := notificationsPending(t, n1, "hook"); p != 5 {
		t.Fatalf("node 1 has %d events pending while the receiver is down, want 5", p)
	}
	rc.setDown(false)
	evs = rc.waitEvents(t, len(want), 20*time.Second)
	if dups := check(evs); dups != 0 {
		t.Fatalf("%d events delivered twice after the receiver recovered", dups)
	}
	if v, err := n1.Metric(ctx, "meshreg_notifications_failures_total", `status="500"`); err != nil || v < 3 {
		t.Fatalf("node 1 failures{status=500} = %v, %v; want >= 3", v, err)
	}
	if v, err := n1.Metric(ctx, "meshreg_notifications_sent_total"); err != nil || v != 15 {
		t.Fatalf("node 1 sent_total = %v, %v; want 15", v, err)
	}

	// 3. Receiver down, node 3 killed with events queued: they arrive after it restarts.
	rc.setDown(true)
	pushN(n3, "queued", 5)
	if p := notificationsPending(t, n3, "hook"); p != 5 {
		t.Fatalf("node 3 has %d events pending, want 5", p)
	}
	n3.Kill()
	rc.setDown(false)
	n3.Restart()
	evs = rc.waitEvents(t, len(want), 30*time.Second)
	time.Sleep(time.Second)
	evs, _ = rc.snapshot()
	dups := check(evs)
	t.Logf("%d events, %d distinct pushes, %d repeats (dropped by id)", len(evs), len(want), dups)
	if p := notificationsPending(t, n3, "hook"); p != 0 {
		t.Fatalf("node 3 still has %d pending after delivering", p)
	}
}
