package testnet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/testnet"
)

// Hostile clients: what one machine on the network, with no credentials,
// can do to a node over HTTP. Each test starts a real node process and
// talks to it only through its API; limits are set through MESHREG_*
// variables, so the same test runs against an older binary (which ignores
// them) and shows what it did there.

// fdCount is how many file descriptors process pid has open.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Skipf("cannot count the node's descriptors: %v", err) // not Linux
	}
	return len(entries)
}

// fdKinds counts process pid's descriptors by what they are: "socket",
// "uploads" (temp files of uploads), "other".
func fdKinds(pid int) map[string]int {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, _ := os.ReadDir(dir)
	kinds := map[string]int{}
	for _, e := range entries {
		target, err := os.Readlink(dir + "/" + e.Name())
		switch {
		case err != nil:
		case strings.HasPrefix(target, "socket:"):
			kinds["socket"]++
		case strings.Contains(target, "/uploads/"):
			kinds["uploads"]++
		default:
			kinds["other"]++
		}
	}
	return kinds
}

// clientAt is an HTTP client whose connections come from ip, one address of
// 127.0.0.0/8: each address is a different client to the node.
func clientAt(ip string) *testnet.Client {
	c := testnet.NewClient("")
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	tr := c.HTTP.Transport.(*http.Transport).Clone()
	tr.DialContext = d.DialContext
	c.HTTP = &http.Client{Transport: tr, Timeout: time.Minute}
	return c
}

// ociCode returns the code of the first error of an OCI error body.
func ociCode(body []byte) string {
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 || e.Errors[0].Message == "" {
		return ""
	}
	return e.Errors[0].Code
}

// seriesCount is how many samples the node's /metrics holds.
func seriesCount(t *testing.T, n *testnet.Node) int {
	t.Helper()
	resp, err := http.Get(n.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for line := range strings.Lines(string(b)) {
		if line != "\n" && !strings.HasPrefix(line, "#") {
			count++
		}
	}
	return count
}

// TestHostileRandomMethods sends 3,000 requests with made-up methods: each
// gets 405 UNSUPPORTED, and /metrics gains a bounded number of series (a
// label per method made 42,000).
func TestHostileRandomMethods(t *testing.T) {
	n := testnet.StartNode(t, testnet.Options{})
	paths := []string{"/v2/", "/v2/h/app/blobs/uploads/", "/v2/h/app/manifests/latest", "/v2/h/app/tags/list"}
	before := seriesCount(t, n)
	rng := rand.New(rand.NewPCG(9, 9))
	client := &http.Client{Timeout: 30 * time.Second}
	for i := range 3000 {
		method := fmt.Sprintf("X%09d", rng.Uint32())
		req, err := http.NewRequest(method, n.URL()+paths[i%len(paths)], nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed || ociCode(body) != "UNSUPPORTED" {
			t.Fatalf("%s %s: %d %s; want 405 UNSUPPORTED", method, req.URL.Path, resp.StatusCode, body)
		}
	}
	after := seriesCount(t, n)
	t.Logf("/metrics samples: %d before, %d after 3,000 made-up methods", before, after)
	if after-before > 100 {
		t.Fatalf("/metrics grew by %d samples after 3,000 made-up methods; want a bounded handful", after-before)
	}
}

// TestHostileUploadFlood: 5,000 upload POSTs from a few clients. The node
// never answers 500, keeps at most --max-uploads sessions, refuses the
// excess with 429 TOOMANYREQUESTS, holds no descriptor per idle session,
// expires the idle ones and deletes their files, and a normal push works
// afterwards.
func TestHostileUploadFlood(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{Env: []string{
		"MESHREG_MAX_UPLOADS=250", "MESHREG_MAX_UPLOADS_PER_CLIENT=100", "MESHREG_UPLOAD_IDLE_TIMEOUT=4s",
	}})
	fdsBefore := fdCount(t, n.PID())
	attackers := []string{"127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"}
	var (
		mu     sync.Mutex
		status = map[int]int{}
		bad    []string
		wg     sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const total, workers = 5000, 20
	jobs := make(chan string)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clientAt(attackers[w%len(attackers)])
			for repo := range jobs {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.URL()+"/v2/"+repo+"/blobs/uploads/", nil)
				resp, err := c.HTTP.Do(req)
				if err != nil {
					mu.Lock()
					bad = append(bad, err.Error())
					mu.Unlock()
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				status[resp.StatusCode]++
				if resp.StatusCode != http.StatusAccepted && (resp.StatusCode != http.StatusTooManyRequests || ociCode(body) != "TOOMANYREQUESTS") {
					bad = append(bad, fmt.Sprintf("%d %s", resp.StatusCode, body))
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	for i := range total {
		jobs <- fmt.Sprintf("h/flood%d", i%7)
	}
	close(jobs)
	wg.Wait()
	fdsAfter := fdCount(t, n.PID())
	t.Logf("%d POSTs in %s: statuses %v; node fds %d before, %d after", total, time.Since(start).Round(time.Millisecond), status, fdsBefore, fdsAfter)
	if len(bad) > 0 {
		t.Errorf("%d answers were neither 202 nor 429 TOOMANYREQUESTS; first: %s", len(bad), bad[0])
	}
	if status[http.StatusTooManyRequests] == 0 {
		t.Errorf("no POST got 429: sessions are not bounded")
	}
	if fdsAfter-fdsBefore > 150 {
		t.Errorf("the node holds %d more descriptors after the flood; want them bounded (no descriptor per idle session)", fdsAfter-fdsBefore)
	}
	if open, err := n.Metric(t.Context(), "meshreg_upload_sessions_open"); err != nil || open > 250 {
		t.Errorf("meshreg_upload_sessions_open = %v (%v); want at most --max-uploads (250)", open, err)
	}
	if files, _ := testnet.LeftoverUploads(n.DataDir()); len(files) > 250 {
		t.Errorf("%d upload files on disk; want at most --max-uploads (250)", len(files))
	}

	// Idle sessions expire and their files go.
	deadline := time.Now().Add(60 * time.Second)
	for {
		files, err := testnet.LeftoverUploads(n.DataDir())
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d upload files still on disk a minute after the flood (--upload-idle-timeout 4s)", len(files))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A normal push, from an attacker address too, works again.
	for _, ip := range []string{"127.0.0.20", attackers[0]} {
		c := clientAt(ip)
		c.Base = n.URL()
		content := testnet.RandomBytes(1 << 20)
		d, err := c.PushBytes(t.Context(), "h/legit", content)
		if err != nil {
			t.Fatalf("push from %s after the flood: %v", ip, err)
		}
		if err := c.VerifyBlob(t.Context(), "h/legit", d, int64(len(content))); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHostileStalledReaders: 50 clients ask for a 15 MB blob and never
// read. With --client-idle-timeout 2s the node cuts them and releases
// their connections and files.
func TestHostileStalledReaders(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{Env: []string{"MESHREG_CLIENT_IDLE_TIMEOUT=2s"}})
	c := testnet.NewClient(n.URL())
	d, err := c.PushBytes(t.Context(), "h/big", testnet.RandomBytes(15<<20))
	if err != nil {
		t.Fatal(err)
	}
	fdsBefore := fdCount(t, n.PID())
	for range 50 {
		conn, err := net.Dial("tcp", n.Host())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.(*net.TCPConn).SetReadBuffer(16 << 10)
		if _, err := fmt.Fprintf(conn, "GET /v2/h/big/blobs/%s HTTP/1.1\r\nHost: %s\r\n\r\n", d, n.Host()); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the node has opened them all (a connection and the blob's
	// file each), then until it lets go. The clients read at most their
	// socket buffers, far less than 15 MB, so the node cannot have finished
	// sending: only cutting them releases the descriptors.
	held := 0
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if held = fdCount(t, n.PID()) - fdsBefore; held >= 90 {
			break
		}
	}
	start := time.Now()
	deadline := start.Add(45 * time.Second)
	for {
		now := fdCount(t, n.PID()) - fdsBefore
		if now <= 5 {
			t.Logf("the node held %d more descriptors for the stalled readers and released them %s later", held, time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node still holds %d more descriptors 45 s after 50 clients stopped reading (held %d)", now, held)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The node still serves everyone else.
	if err := c.VerifyBlob(t.Context(), "h/big", d, 15<<20); err != nil {
		t.Fatal(err)
	}
}

// TestHostileSlowHeaders: 50 clients open a request and never finish its
// header (slowloris). The header must arrive within the client idle
// timeout (at most 30 s): with --client-idle-timeout 2s their connections
// are closed within seconds.
func TestHostileSlowHeaders(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{Env: []string{"MESHREG_CLIENT_IDLE_TIMEOUT=2s"}})
	stallAndExpectRelease(t, n, "connections with unfinished headers", 15*time.Second,
		"GET /v2/ HTTP/1.1\r\nHost: %s\r\nX-Slow: ")
}

// TestHostileSlowUploadBodies: one client starts 200 monolithic uploads
// whose bodies trickle (a byte, then nothing). Each would hold a
// connection and a temp file for as long as it trickles; past
// --max-writes-per-client (64 by default) the node answers 429 at once,
// so what one client holds stays bounded, and another client can push.
func TestHostileSlowUploadBodies(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{})
	fdsBefore := fdCount(t, n.PID())
	d := digest.FromString("never sent")
	var conns []net.Conn
	for range 200 {
		conn, err := net.Dial("tcp", n.Host())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, "POST /v2/h/slow/blobs/uploads/?digest=%s HTTP/1.1\r\nHost: %s\r\nContent-Length: 1048576\r\n\r\nx", d, n.Host()); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	// A refused upload is answered at once; an admitted one not before its
	// body ends.
	time.Sleep(2 * time.Second)
	refused := 0
	for _, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		line := make([]byte, 12)
		if _, err := io.ReadFull(conn, line); err == nil && string(line) == "HTTP/1.1 429" {
			refused++
		}
	}
	// A refused connection closes half a second after its answer (net/http
	// waits so that the client reads the 429 before a reset): poll.
	held := fdCount(t, n.PID()) - fdsBefore
	for deadline := time.Now().Add(10 * time.Second); held > 2*64+20 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		held = fdCount(t, n.PID()) - fdsBefore
	}
	t.Logf("200 trickling uploads from one client: %d refused with 429; the node holds %d more descriptors (%v)", refused, held, fdKinds(n.PID()))
	if refused < 200-64 {
		t.Errorf("only %d of 200 trickling uploads were refused; want all past --max-writes-per-client (64)", refused)
	}
	if held > 2*64+20 {
		t.Errorf("the node holds %d more descriptors for one client's trickling uploads; want at most about 2 per admitted upload", held)
	}
	c := clientAt("127.0.0.21")
	c.Base = n.URL()
	if _, err := c.PushBytes(t.Context(), "h/other", testnet.RandomBytes(64<<10)); err != nil {
		t.Fatalf("another client's push during the trickle: %v", err)
	}
}

// TestHostileTricklingRefusedBodies: 50 clients send a request the node
// refuses without reading its body (a bad digest) and trickle the body: a
// byte, then nothing. net/http reads what is left of a small body before it
// answers, so without a read deadline each would hold its connection for
// good; with --body-idle-timeout 2s they are let go within seconds.
func TestHostileTricklingRefusedBodies(t *testing.T) {
	testnet.RequireProcess(t)
	n := testnet.StartNode(t, testnet.Options{Env: []string{"MESHREG_BODY_IDLE_TIMEOUT=2s"}})
	stallAndExpectRelease(t, n, "connections with trickling bodies", 20*time.Second,
		"POST /v2/h/trickle/blobs/uploads/?digest=sha256:bad HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\nx")
}

// TestHostileMountWithoutFrom: a blob pushed to one repository cannot be
// pulled into another by mounting it without a source, nor from a source
// that does not hold it, nor after it was deleted from its repository:
// each such mount is a normal upload session (202 with a Location) and
// links nothing.
func TestHostileMountWithoutFrom(t *testing.T) {
	n := testnet.StartNode(t, testnet.Options{})
	c := testnet.NewClient(n.URL())
	secret := []byte("a private layer " + testnet.RandomHex(8))
	d, err := c.PushBytes(t.Context(), "h/victim", secret)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := c.PushBytes(t.Context(), "h/deleted", []byte("deleted layer "+testnet.RandomHex(8)))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodDelete, n.URL()+"/v2/h/deleted/blobs/"+gone.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("DELETE blob: %d", resp.StatusCode)
	}

	for _, tc := range []struct{ name, d, query string }{
		{"no from", d.String(), ""},
		{"from a repository without it", d.String(), "&from=h/empty"},
		{"deleted blob, no from", gone.String(), ""},
		{"deleted blob, from its old repository", gone.String(), "&from=h/deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(n.URL()+"/v2/h/attacker/blobs/uploads/?mount="+tc.d+tc.query, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, "/v2/h/attacker/blobs/uploads/") {
				t.Fatalf("mount: %d, Location %q; want 202 and a new upload session", resp.StatusCode, loc)
			}
			status, _, _ := c.HeadBlob(t.Context(), "h/attacker", digest.Digest(tc.d))
			if status != http.StatusNotFound {
				t.Fatalf("HEAD of the blob in the attacker's repository: %d; want 404", status)
			}
		})
	}
	// A mount that names a source holding the blob still works.
	resp, err = http.Post(n.URL()+"/v2/h/friend/blobs/uploads/?mount="+d.String()+"&from=h/victim", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mount from the holding repository: %d; want 201", resp.StatusCode)
	}
	if err := c.VerifyBlob(t.Context(), "h/friend", d, int64(len(secret))); err != nil {
		t.Fatal(err)
	}
}

// TestHostileFlagValues: `meshreg serve --check` refuses every duration and
// size flag set to zero, a negative, a value too small to work (4 ns
// panicked the expiry ticker) or an absurd one, naming the flag and its
// range, and exits non-zero without starting.
func TestHostileFlagValues(t *testing.T) {
	bin := testnet.Binary(t)
	cases := map[string][]string{
		"upload-idle-timeout":    {"0s", "-1s", "3ns", "10000h"},
		"body-idle-timeout":      {"0s", "1ns", "100h"},
		"client-idle-timeout":    {"0s", "1ns", "100h"},
		"peer-idle-timeout":      {"0s", "2ns", "100h"},
		"repair-interval":        {"0s", "3ns", "10000h"},
		"reprovide-interval":     {"0s", "3ns", "100h"},
		"dead-server-timeout":    {"0s", "3ns", "100000h"},
		"snapshot-interval":      {"0s", "3ns", "10000h"},
		"shutdown-timeout":       {"0s", "-1s", "1000h"},
		"max-manifest-size":      {"0", "-5", "1099511627776"},
		"max-uploads":            {"0", "-1", "1000000000"},
		"max-writes-per-client":  {"0", "-1", "1000000000"},
		"max-uploads-per-client": {"0", "-1", "1000000000"},
		"snapshot-threshold":     {"0"},
		"trailing-logs":          {"0"},
		"voters":                 {"0", "100"},
		"replicas":               {"0", "100000"},
	}
	// Not only --check: serve itself refuses at start (3ns made the expiry
	// ticker panic once the node ran).
	t.Run("serve upload-idle-timeout=3ns", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		addr, err := testnet.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, bin, "serve", "--data-dir", t.TempDir(), "--listen", addr,
			"--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--upload-idle-timeout=3ns")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if err == nil || ctx.Err() != nil {
			t.Fatalf("serve --upload-idle-timeout=3ns did not stop at start (err %v):\n%s", err, out)
		}
		if strings.Contains(string(out), "panic") || !strings.Contains(string(out), "--upload-idle-timeout") {
			t.Fatalf("serve --upload-idle-timeout=3ns: want a message naming the flag, got:\n%s", out)
		}
	})
	for flag, values := range cases {
		for _, v := range values {
			t.Run(flag+"="+v, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				defer cancel()
				cmd := exec.CommandContext(ctx, bin, "serve", "--check", "--data-dir", t.TempDir(), "--"+flag+"="+v)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
				out, err := cmd.Output()
				if err == nil {
					t.Fatalf("serve --check --%s=%s was accepted:\n%s", flag, v, out)
				}
				if msg := stderr.String(); !strings.Contains(msg, "--"+flag) || !strings.Contains(msg, " to ") {
					t.Errorf("serve --check --%s=%s: message %q does not name the flag and its range", flag, v, msg)
				}
			})
		}
	}
}

// stallAndExpectRelease opens 50 connections to n, sends each the start of
// a request (format, with n's host for %s) and nothing more, and waits
// until the node held at least 45 of them and then let all but 5 go,
// failing after within.
func stallAndExpectRelease(t *testing.T, n *testnet.Node, what string, within time.Duration, format string) {
	t.Helper()
	fdsBefore := fdCount(t, n.PID())
	for range 50 {
		conn, err := net.Dial("tcp", n.Host())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := fmt.Fprintf(conn, format, n.Host()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for held := 0; ; time.Sleep(100 * time.Millisecond) {
		now := fdCount(t, n.PID()) - fdsBefore
		held = max(held, now)
		if now <= 5 && held >= 45 {
			t.Logf("the node held %d %s and let them go %s later", held, what, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("the node still holds %d more descriptors %s after 50 clients opened %s (peak %d)", now, within, what, held)
		}
	}
}
