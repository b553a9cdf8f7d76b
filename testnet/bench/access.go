package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/meshreg/meshreg/api/tlsconf/tlstest"
	"github.com/meshreg/meshreg/testnet"
)

// The access section (see main.go) measures what TLS and authentication
// cost: a blob pull and manifest GETs by tag on meshreg and on
// Distribution, each plain and with TLS and htpasswd Basic auth on.

// accessLabel names the servers with TLS and auth on.
const accessLabel = "TLS+auth"

// Goals of the access section: with TLS and auth on, meshreg pulls a blob
// at no less than accessBlobGoal and answers manifest GETs at no less than
// accessManifestGoal of its plain rate.
const (
	accessBlobGoal     = 0.90
	accessManifestGoal = 0.80
)

// access is a TLS and htpasswd setup the benchmark makes: a CA, a server
// certificate for 127.0.0.1, and one user. Clients of meshreg log in once
// at its token service and send the bearer token (as docker does);
// clients of Distribution, whose htpasswd mode has no token service, send
// the password as Basic auth on every request.
type access struct {
	certFile, keyFile, htpasswd string
	roots                       *x509.CertPool
	user, password              string
}

// newAccess writes the CA, the certificate and the htpasswd file into dir.
// The password's bcrypt hash has the default cost of Go's bcrypt (10), as
// `htpasswd -B -C 10` makes.
func newAccess(dir string) (*access, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	ca, err := tlstest.MakeCA(dir, "meshreg bench CA")
	if err != nil {
		return nil, err
	}
	leaf, err := ca.Issue(2, x509.ExtKeyUsageServerAuth, []string{"localhost"})
	if err != nil {
		return nil, err
	}
	a := &access{certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key"),
		htpasswd: filepath.Join(dir, "htpasswd"), roots: x509.NewCertPool(), user: "bench"}
	a.roots.AddCert(ca.Cert)
	a.password = "bench-" + testnet.RandomHex(8)
	hash, err := bcrypt.GenerateFromPassword([]byte(a.password), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	for f, b := range map[string][]byte{a.certFile: leaf.CertPEM, a.keyFile: leaf.KeyPEM, a.htpasswd: []byte(a.user + ":" + string(hash) + "\n")} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// authorize sends s's credentials with every request: its bearer token
// once it has one, else Basic.
type authorize struct {
	next http.RoundTripper
	s    *server
}

func (a authorize) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	if a.s.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+a.s.bearer)
	} else {
		req.SetBasicAuth(a.s.access.user, a.s.access.password)
	}
	return a.next.RoundTrip(req)
}

// fetchToken gets s (a meshreg node with auth on) a bearer token for the
// benchmark's repositories from the node's token service, with Basic
// credentials, as docker does after a 401 challenge; from then on the
// clients of s send the token. The node may have no signing key for a
// moment after it starts (503, Retry-After): fetchToken tries for 30 s.
func fetchToken(ctx context.Context, s *server) error {
	u := s.url() + "/_meshreg/v1/token?scope=" + url.QueryEscape("repository:"+blobRepo+":pull,push") +
		"&scope=" + url.QueryEscape("repository:"+imageRepo+":pull,push")
	client := s.httpClient(s.transport(1), 10*time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("token from %s: %w", s.name, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		var tok struct {
			Token string `json:"token"`
		}
		switch {
		case resp.StatusCode == http.StatusOK && json.Unmarshal(body, &tok) == nil && tok.Token != "":
			s.bearer = tok.Token
			return nil
		case resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline):
			return fmt.Errorf("token from %s: %s: %s", s.name, resp.Status, body)
		}
		if err := sleepCtx(ctx, 500*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// accessMetrics are the metrics of the access section, from metrics.
func accessMetrics() []metric {
	var ms []metric
	for _, m := range metrics {
		if m.name == "blob pull" || m.name == "manifest GET by tag" {
			ms = append(ms, m)
		}
	}
	return ms
}

// runAccess starts meshreg and Distribution, each plain and with TLS and
// auth on, gives each the same -access-blob-size blob and a one-layer
// image (untimed), then measures the blob pull and the manifest GETs on
// every server -runs times, rotating which goes first, and returns the
// table. The servers are stopped when it returns.
func runAccess(ctx context.Context, c config, meshregBin, distBin, root string) (string, error) {
	acc, err := newAccess(filepath.Join(root, "pki"))
	if err != nil {
		return "", fmt.Errorf("making the CA, certificate and htpasswd file: %w", err)
	}
	var servers []*server
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	starts := []func() (*server, error){
		func() (*server, error) {
			return startMeshregWith(ctx, meshregBin, filepath.Join(root, "meshreg"), "meshreg", nil)
		},
		func() (*server, error) {
			s, err := startMeshregWith(ctx, meshregBin, filepath.Join(root, "meshreg-access"), "meshreg "+accessLabel, acc)
			if err == nil {
				err = fetchToken(ctx, s)
			}
			return s, err
		},
		func() (*server, error) {
			return startDistributionWith(ctx, distBin, filepath.Join(root, "distribution"), nil)
		},
		func() (*server, error) {
			return startDistributionWith(ctx, distBin, filepath.Join(root, "distribution-access"), acc)
		},
	}
	for _, start := range starts {
		s, err := start()
		if s != nil {
			servers = append(servers, s)
		}
		if err != nil {
			return "", err
		}
	}
	logf("access: %s; blob %s; %d conns × %v; %d runs; %d CPUs", strings.Join(names(servers), ", "), c.accessBlobSize, c.conns, c.duration, c.runs, runtime.NumCPU())

	ac := c
	ac.blobSize, ac.layers, ac.layerSize = c.accessBlobSize, 1, 1<<20
	w := newWorkload(ac, 0)
	for _, s := range servers {
		if _, _, err := blobPush(ctx, s, w); err != nil {
			return "", fmt.Errorf("access: pushing the blob to %s: %w", s.name, err)
		}
		if _, _, err := imagePush(ctx, s, w); err != nil {
			return "", fmt.Errorf("access: pushing the image to %s: %w", s.name, err)
		}
	}
	res := newResults(servers)
	for run := range c.runs {
		for _, m := range accessMetrics() {
			for _, s := range accessOrder(servers, run) {
				v, note, err := m.measure(ctx, s, w)
				if err != nil {
					return "", fmt.Errorf("access run %d, %s, %s: %w", run+1, m.name, s.name, err)
				}
				res.add(m.name, s, v, note)
				logf("access run %d  %-22s %-28s %10.2f %s %s", run+1, m.name, s.name, v, m.unit, note)
				// Distribution with htpasswd goes on running bcrypt for the
				// requests queued when the measurement ended: let the
				// server finish before the next one is measured.
				if err := waitIdle(ctx, s.proc.PID()); err != nil {
					return "", err
				}
			}
		}
	}
	return res.accessTable(c, servers[0], servers[1], servers[2], servers[3]), nil
}

// accessOrder is the order the servers (meshreg, meshreg TLS+auth,
// Distribution, Distribution TLS+auth) are measured in, in run: each
// registry's plain and TLS+auth servers one right after the other (so
// both see the same background load, and their ratio is taken run by
// run), which of the two first alternating each run, and which registry
// first every other run.
func accessOrder(servers []*server, run int) []*server {
	pairs := [][]*server{{servers[0], servers[1]}, {servers[2], servers[3]}}
	if run%2 == 1 {
		pairs = [][]*server{{servers[1], servers[0]}, {servers[3], servers[2]}}
	}
	if run/2%2 == 1 {
		pairs[0], pairs[1] = pairs[1], pairs[0]
	}
	return slices.Concat(pairs...)
}

// waitIdle waits until the process pid uses less than 10% of a CPU over
// a quarter second, for at most 20 s (then it goes on anyway).
func waitIdle(ctx context.Context, pid int) error {
	const step = 250 * time.Millisecond
	deadline := time.Now().Add(20 * time.Second)
	prev, err := cpuTicks(pid)
	if err != nil {
		return err
	}
	for time.Now().Before(deadline) {
		t := time.NewTimer(step)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		cur, err := cpuTicks(pid)
		if err != nil {
			return err
		}
		if cur-prev <= clockTicks*int64(step)/int64(time.Second)/10 {
			return nil
		}
		prev = cur
	}
	return nil
}

// clockTicks is the kernel's USER_HZ: the unit of /proc/PID/stat's times.
const clockTicks = 100

// cpuTicks is the CPU time (user + system) of the process pid so far, in
// clock ticks, from /proc/PID/stat.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	// After "pid (comm) ": state is field 3, utime 14, stime 15.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("CPU time of process %d: unexpected /proc stat %q", pid, b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("CPU time of process %d: %w", pid, err)
	}
	return utime + stime, nil
}

func names(servers []*server) []string {
	var n []string
	for _, s := range servers {
		n = append(n, s.name)
	}
	return n
}

// accessTable renders the access section: each metric's median on the
// four servers, the TLS+auth/plain ratio of each registry, and whether
// meshreg meets its goal.
func (r *results) accessTable(c config, mesh, meshAcc, dist, distAcc *server) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| metric (median of %d) | meshreg | meshreg %s | ratio, median of runs (goal) | %s | %s | ratio, median of runs |\n", c.runs, accessLabel, dist.name, distAcc.name)
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	rows := []struct {
		key, label string
		goal       float64
	}{
		{"blob pull", fmt.Sprintf("pull one %s blob, MB/s", c.accessBlobSize), accessBlobGoal},
		{"manifest GET by tag", fmt.Sprintf("manifest GET by tag, %d conns, req/s", c.conns), accessManifestGoal},
	}
	// The median of the run-by-run ratios: each run measures a
	// registry's two servers back to back (see accessOrder).
	ratio := func(key string, acc, plain *server) float64 {
		a, p := r.samples[key][acc], r.samples[key][plain]
		var rs []float64
		for i := range min(len(a), len(p)) {
			if p[i] != 0 {
				rs = append(rs, a[i]/p[i])
			}
		}
		return median(rs)
	}
	var verdicts []string
	for _, row := range rows {
		m, ma := median(r.samples[row.key][mesh]), median(r.samples[row.key][meshAcc])
		d, da := median(r.samples[row.key][dist]), median(r.samples[row.key][distAcc])
		mr := ratio(row.key, meshAcc, mesh)
		met := "met"
		if mr < row.goal {
			met = "NOT met"
		}
		verdicts = append(verdicts, fmt.Sprintf("%s %.2f× of plain (goal ≥ %.2f×: %s)", row.key, mr, row.goal, met))
		fmt.Fprintf(&b, "| %s | %.0f | %.0f | %.2f× (≥ %.2f×) | %.0f | %.0f | %.2f× |\n", row.label, m, ma, mr, row.goal, d, da, ratio(row.key, distAcc, dist))
	}
	fmt.Fprintf(&b, "\nmeshreg with TLS and auth: %s.\n", strings.Join(verdicts, "; "))
	fmt.Fprintf(&b, "%s; %d CPUs; %s; loopback; four servers running, each registry's plain and TLS+auth servers measured back to back, alternating, each server idle before the next starts; TLS 1.3 over HTTP/1.1, "+
		"meshreg: a bearer token from its token service, Distribution: Basic auth on every request (bcrypt cost %d); %s.\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), runtime.Version(), bcrypt.DefaultCost, mesh.version)
	b.WriteString(commandLine())
	r.writeNotes(&b, "blob pull", "manifest GET by tag")
	return b.String()
}
