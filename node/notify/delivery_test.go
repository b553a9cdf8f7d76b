package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
)

// TestSign checks the signature against RFC 4231's test case 2.
func TestSign(t *testing.T) {
	t.Parallel()
	got := Sign([]byte("Jefe"), []byte("what do ya want for nothing?"))
	if want := "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestNextBackoff(t *testing.T) {
	t.Parallel()
	base, max := 100*time.Millisecond, time.Second
	var got []time.Duration
	d := time.Duration(0)
	for range 6 {
		d = nextBackoff(d, base, max)
		got = append(got, d)
	}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second, time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("backoffs %v, want %v", got, want)
	}
	if d := nextBackoff(time.Hour, time.Second, time.Hour); d != time.Hour {
		t.Fatalf("no overflow past the cap: %v", d)
	}
}

// receiver is a webhook endpoint for tests: it checks each envelope's
// media type and signature, answers with fail() or 200, and records
// the events it accepted.
type receiver struct {
	t      *testing.T
	secret string
	mu     sync.Mutex
	fail   int // answer 500 to this many more requests
	calls  int
	events []Event
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.calls++
	if ct := r.Header.Get("Content-Type"); ct != EventsMediaType {
		rc.t.Errorf("Content-Type %q", ct)
	}
	if rc.secret != "" {
		if sig := r.Header.Get(SignatureHeader); sig != Sign([]byte(rc.secret), body) {
			rc.t.Errorf("signature %q does not match the body", sig)
		}
	}
	if rc.fail > 0 {
		rc.fail--
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var env Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		rc.t.Errorf("envelope: %v", err)
	}
	rc.events = append(rc.events, env.Events...)
}

func (rc *receiver) got() []Event {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]Event(nil), rc.events...)
}

func (rc *receiver) waitFor(t *testing.T, n int) []Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if evs := rc.got(); len(evs) >= n {
			return evs
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("receiver got %d events, want %d", len(rc.got()), n)
	return nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func push(repo, tag string) api.Event {
	return api.Event{Action: ActionPush, Repository: repo, Tag: tag, Digest: "sha256:" + strings.Repeat("a", 64),
		MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 10, Time: time.Now()}
}

func startRun(t *testing.T, n *Notifier) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestDeliveryRetriesInOrder: a receiver that answers 500 for a while
// gets every event later, each once, in the order of the pushes, every
// envelope signed; the failures are counted by status.
func TestDeliveryRetriesInOrder(t *testing.T) {
	t.Parallel()
	rc := &receiver{t: t, secret: "s3cret", fail: 3}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "notifications.yaml")
	writeFile(t, file, fmt.Sprintf("endpoints: [{name: r, url: '%s', secret: s3cret, backoff: 20ms, maxbackoff: 100ms, threshold: 2}]", srv.URL))
	n, err := Open(file, filepath.Join(dir, "q"), "node-1", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	reg := prometheus.NewRegistry()
	n.Register(reg)
	for i := range 5 {
		n.Notify(context.Background(), push("team/app", fmt.Sprintf("v%d", i)))
	}
	stop := startRun(t, n)
	defer stop()
	for i := 5; i < 40; i++ {
		n.Notify(context.Background(), push("team/app", fmt.Sprintf("v%d", i)))
	}
	evs := rc.waitFor(t, 40)
	ids := map[string]bool{}
	for i, e := range evs {
		if want := fmt.Sprintf("v%d", i); e.Target.Tag != want || e.Source.InstanceID != "node-1" {
			t.Fatalf("event %d: tag %q from %q, want %q from node-1", i, e.Target.Tag, e.Source.InstanceID, want)
		}
		if ids[e.ID] {
			t.Fatalf("event id %s twice", e.ID)
		}
		ids[e.ID] = true
	}
	time.Sleep(50 * time.Millisecond)
	if len(rc.got()) != 40 {
		t.Fatalf("receiver got %d events, want 40", len(rc.got()))
	}
	// The receiver has the last events before the sender counted them.
	st := endpointStatusOnceSent(n, 40)
	if st.Failures["500"] != 3 || st.Sent != 40 || st.Pending != 0 || st.LastSuccess == nil {
		t.Fatalf("status %+v", st)
	}
	if v := metricValue(t, reg, "meshreg_notifications_failures_total", "500"); v != 3 {
		t.Fatalf("failures metric %v, want 3", v)
	}
	if v := metricValue(t, reg, "meshreg_notifications_sent_total", ""); v != 40 {
		t.Fatalf("sent metric %v, want 40", v)
	}
}

// TestQueuedEventsSurviveRestart: events queued while the receiver is
// down are delivered by a notifier opened again on the same directory,
// and none twice.
func TestQueuedEventsSurviveRestart(t *testing.T) {
	t.Parallel()
	rc := &receiver{t: t, fail: 1 << 30} // down
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "notifications.yaml")
	writeFile(t, file, fmt.Sprintf("endpoints: [{name: r, url: '%s', backoff: 20ms, maxbackoff: 50ms}]", srv.URL))
	n, err := Open(file, filepath.Join(dir, "q"), "node-1", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	stop := startRun(t, n)
	for i := range 5 {
		n.Notify(context.Background(), push("app", fmt.Sprintf("v%d", i)))
	}
	time.Sleep(100 * time.Millisecond) // a few failed attempts
	stop()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	rc.mu.Lock()
	rc.fail = 0 // up again
	rc.mu.Unlock()
	n, err = Open(file, filepath.Join(dir, "q"), "node-1", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if p := n.Status().Endpoints[0].Pending; p != 5 {
		t.Fatalf("%d pending after the restart, want 5", p)
	}
	defer startRun(t, n)()
	rc.waitFor(t, 5)
	time.Sleep(50 * time.Millisecond)
	// At least once: a POST cut off by the stop may still have reached
	// the receiver; it is then sent again with the same id.
	var evs []Event
	seen := map[string]bool{}
	for _, e := range rc.got() {
		if !seen[e.ID] {
			seen[e.ID] = true
			evs = append(evs, e)
		}
	}
	if len(evs) != 5 {
		t.Fatalf("got %d distinct events, want 5", len(evs))
	}
	for i, e := range evs {
		if e.Target.Tag != fmt.Sprintf("v%d", i) {
			t.Fatalf("event %d is %q", i, e.Target.Tag)
		}
	}
}

// TestReload: a new endpoint in the file gets events within a reload
// interval; a broken file keeps the last good one and says so once.
func TestReload(t *testing.T) {
	t.Parallel()
	a, b := &receiver{t: t}, &receiver{t: t}
	sa, sb := httptest.NewServer(a), httptest.NewServer(b)
	defer sa.Close()
	defer sb.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "notifications.yaml")
	writeFile(t, file, fmt.Sprintf("endpoints: [{name: a, url: '%s'}]", sa.URL))
	var logs strings.Builder
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		t.Logf("%s", p)
		return logs.Write(p)
	}), nil))
	n, err := Open(file, filepath.Join(dir, "q"), "n", log)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	defer startRun(t, n)()
	n.Notify(context.Background(), push("app", "one"))
	a.waitFor(t, 1)

	writeFile(t, file, fmt.Sprintf("endpoints: [{name: a, url: '%s'}, {name: b, url: '%s', secret: topsecret}]\n", sa.URL, sb.URL))
	deadline := time.Now().Add(5 * time.Second)
	for len(n.Status().Endpoints) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	n.Notify(context.Background(), push("app", "two"))
	a.waitFor(t, 2)
	if evs := b.waitFor(t, 1); evs[0].Target.Tag != "two" {
		t.Fatalf("b got %q", evs[0].Target.Tag)
	}

	writeFile(t, file, "endpoints: [{name: a, url: 'ftp://nope/', secret: topsecret}]\n")
	time.Sleep(2500 * time.Millisecond)
	n.Notify(context.Background(), push("app", "three"))
	b.waitFor(t, 2) // the last good file is in effect
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if c := strings.Count(out, "notifications file rejected"); c != 1 || !strings.Contains(out, "level=ERROR") {
		t.Fatalf("want one ERROR for the broken file, logs:\n%s", out)
	}
	if strings.Contains(out, "topsecret") {
		t.Fatalf("a secret was logged:\n%s", out)
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// metricValue is the value of the series of name whose labels include
// the value label (any series when label is "").
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if label == "" || l.GetValue() == label {
					if m.GetCounter() != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}

// TestQueueFullDropsOldest: with delivery behind, events past
// maxpending drop the oldest, counted in the metric, the status and a
// WARN; the newest are delivered once it is up.
func TestQueueFullDropsOldest(t *testing.T) {
	t.Parallel()
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "notifications.yaml")
	writeFile(t, file, fmt.Sprintf("endpoints: [{name: r, url: '%s', backoff: 20ms, maxbackoff: 50ms, maxpending: 3}]", srv.URL))
	var logs strings.Builder
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	n, err := Open(file, filepath.Join(dir, "q"), "n", log)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	reg := prometheus.NewRegistry()
	n.Register(reg)
	// No delivery runs yet (events wait on disk), so nothing is in
	// flight when the oldest are dropped.
	for i := range 5 {
		n.Notify(context.Background(), push("app", fmt.Sprintf("v%d", i)))
	}
	if st := n.Status().Endpoints[0]; st.Dropped != 2 || st.Pending != 3 {
		t.Fatalf("status %+v, want 2 dropped and 3 pending", st)
	}
	if v := metricValue(t, reg, "meshreg_notifications_dropped_total", "queue_full"); v != 2 {
		t.Fatalf("dropped metric %v, want 2", v)
	}
	logMu.Lock()
	warned := strings.Contains(logs.String(), "level=WARN msg=\"notification queue full")
	logMu.Unlock()
	if !warned {
		t.Fatalf("no WARN for the dropped events:\n%s", logs.String())
	}
	defer startRun(t, n)()
	evs := rc.waitFor(t, 3)
	if got := fmt.Sprint(evs[0].Target.Tag, evs[1].Target.Tag, evs[2].Target.Tag); got != "v2v3v4" {
		t.Fatalf("delivered %s, want the newest three; logs:\n%s", got, logs.String())
	}
}

// TestHostileReceivers: a receiver that hangs is cut off at the timeout
// and retried; a redirect is a failure (the body and its signature go
// nowhere else); neither stops delivery.
func TestHostileReceivers(t *testing.T) {
	t.Parallel()
	var other, hung sync.Once
	var otherHit bool
	elsewhere := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { other.Do(func() { otherHit = true }) }))
	defer elsewhere.Close()
	rc := &receiver{t: t}
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		c := calls
		mu.Unlock()
		switch c {
		case 1: // hangs until the sender gives up (the server notices once the body is read)
			_, _ = io.Copy(io.Discard, r.Body)
			hung.Do(func() {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			})
		case 2:
			http.Redirect(w, r, elsewhere.URL, http.StatusTemporaryRedirect)
		default:
			rc.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "notifications.yaml")
	writeFile(t, file, fmt.Sprintf("endpoints: [{name: r, url: '%s', timeout: 200ms, backoff: 20ms, maxbackoff: 50ms}]", srv.URL))
	n, err := Open(file, filepath.Join(dir, "q"), "n", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	defer startRun(t, n)()
	start := time.Now()
	n.Notify(context.Background(), push("app", "v1"))
	evs := rc.waitFor(t, 1)
	if evs[0].Target.Tag != "v1" || time.Since(start) > 5*time.Second {
		t.Fatalf("delivered %+v after %s", evs, time.Since(start))
	}
	// The receiver has the event before the sender has read its answer
	// and counted it sent.
	st := endpointStatusOnceSent(n, 1)
	if st.Failures["error"] != 1 || st.Failures["307"] != 1 || st.Sent != 1 {
		t.Fatalf("status %+v, want one timeout (error), one 307, one sent", st)
	}
	if otherHit {
		t.Fatal("the redirect was followed")
	}
}

// TestOneSenderPerEndpoint: an endpoint added to the file before Run
// starts has one delivery goroutine, not two (envelopes would then go
// out twice or out of order).
func TestOneSenderPerEndpoint(t *testing.T) {
	// Not parallel: it counts the package's delivery goroutines.
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "notifications.yaml")
	writeFile(t, file, "endpoints: []\n")
	n, err := Open(file, filepath.Join(dir, "q"), "n", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	writeFile(t, file, fmt.Sprintf("endpoints: [{name: r, url: '%s'}]\n# changed\n", srv.URL))
	time.Sleep(1100 * time.Millisecond) // past the reload interval: Run's first reconcile opens it
	defer startRun(t, n)()
	deadline := time.Now().Add(5 * time.Second)
	for len(n.Status().Endpoints) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	if c := strings.Count(stacks, "notify.(*Notifier).start.func1"); c != 1 {
		t.Fatalf("%d delivery goroutines for one endpoint, want 1", c)
	}
}

// BenchmarkNotifyAndDeliver: events queued by Notify (one endpoint)
// and delivered to a local receiver, per event.
func BenchmarkNotifyAndDeliver(b *testing.B) {
	var mu sync.Mutex
	got := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env Envelope
		_ = json.NewDecoder(r.Body).Decode(&env)
		mu.Lock()
		got += len(env.Events)
		mu.Unlock()
	}))
	defer srv.Close()
	dir := b.TempDir()
	file := filepath.Join(dir, "notifications.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf("endpoints: [{name: r, url: '%s', secret: s}]", srv.URL)), 0o600); err != nil {
		b.Fatal(err)
	}
	n, err := Open(file, filepath.Join(dir, "q"), "n", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	e := push("team/app", "v1")
	for b.Loop() {
		n.Notify(context.Background(), e)
	}
	for {
		mu.Lock()
		g := got
		mu.Unlock()
		if g >= b.N {
			break
		}
		time.Sleep(time.Millisecond)
	}
}

// endpointStatusOnceSent is the first endpoint's status once it counted
// sent events and has none pending, or after 5 s (the caller's checks then
// say what is wrong).
func endpointStatusOnceSent(n *Notifier, sent uint64) EndpointStatus {
	deadline := time.Now().Add(5 * time.Second)
	st := n.Status().Endpoints[0]
	for (st.Sent != sent || st.Pending != 0) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		st = n.Status().Endpoints[0]
	}
	return st
}
