package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api/tlsconf/tlstest"
)

// syncBuffer is a log destination tests read while handshakes write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestFilesCheck(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t, "check CA")
	cert, key := ca.Server(t, 2).Files(t)
	other, _ := ca.Server(t, 3).Files(t)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    Files
		want string // "" for no error
	}{
		{"none", Files{}, ""},
		{"pair", Files{Cert: cert, Key: key}, ""},
		{"pair and client CA", Files{Cert: cert, Key: key, ClientCA: ca.CertFile}, ""},
		{"cert alone", Files{Cert: cert}, "--tls-cert needs --tls-key"},
		{"key alone", Files{Key: key}, "--tls-key needs --tls-cert"},
		{"client CA alone", Files{ClientCA: ca.CertFile}, "--tls-client-ca needs --tls-cert and --tls-key"},
		{"key of another cert", Files{Cert: other, Key: key}, "private key does not match"},
		{"missing cert", Files{Cert: cert + ".missing", Key: key}, "no such file"},
		{"client CA not PEM", Files{Cert: cert, Key: key, ClientCA: garbage}, "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Check()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Check() = %v, want %q", err, tc.want)
			}
		})
	}
}

// rotate writes leaf over the files and moves their mtime on, as a
// rotation seconds later would.
func rotate(t *testing.T, leaf tlstest.Leaf, cert, key string, at time.Time) {
	t.Helper()
	leaf.Write(t, cert, key)
	for _, f := range []string{cert, key} {
		if err := os.Chtimes(f, at, at); err != nil {
			t.Fatal(err)
		}
	}
}

func serial(t *testing.T, c *tls.Certificate) int64 {
	t.Helper()
	l, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return l.SerialNumber.Int64()
}

func TestReloaderPicksUpRotationKeepsOldOnBadPair(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t, "reload CA")
	cert, key := ca.Server(t, 10).Files(t)
	var logs syncBuffer
	r, err := NewReloader(cert, key, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now()
	r.now = func() time.Time { return clock }

	rotate(t, ca.Server(t, 11), cert, key, time.Now().Add(time.Minute))
	if got := serial(t, r.Current()); got != 10 {
		t.Errorf("within the check interval: serial %d, want the old 10", got)
	}
	clock = clock.Add(DefaultCheckInterval)
	if got := serial(t, r.Current()); got != 11 {
		t.Errorf("after the interval: serial %d, want the rotated 11", got)
	}

	// A certificate whose key is not there yet (cert written first): the
	// old pair stays, one error is logged however many handshakes come.
	bad := ca.Server(t, 12)
	if err := os.WriteFile(cert, bad.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chtimes(cert, time.Now().Add(2*time.Minute), time.Now().Add(2*time.Minute))
	for range 3 {
		clock = clock.Add(DefaultCheckInterval)
		if got := serial(t, r.Current()); got != 11 {
			t.Fatalf("with a mismatched pair: serial %d, want the previous 11", got)
		}
	}
	if n := strings.Count(logs.String(), "does not load"); n != 1 {
		t.Errorf("%d errors logged for one bad pair, want 1:\n%s", n, logs.String())
	}
	// The files vanish for a while (a Secret remounted): the old pair
	// stays, one error is logged.
	if err := os.Rename(cert, cert+".away"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clock = clock.Add(DefaultCheckInterval)
		if got := serial(t, r.Current()); got != 11 {
			t.Fatalf("without the files: serial %d, want the previous 11", got)
		}
	}
	if n := strings.Count(logs.String(), "unreadable"); n != 1 {
		t.Errorf("%d errors logged for missing files, want 1:\n%s", n, logs.String())
	}
	if err := os.Rename(cert+".away", cert); err != nil {
		t.Fatal(err)
	}
	// Then the key arrives: the pair loads.
	rotate(t, bad, cert, key, time.Now().Add(3*time.Minute))
	clock = clock.Add(DefaultCheckInterval)
	if got := serial(t, r.Current()); got != 12 {
		t.Errorf("once the key matches: serial %d, want 12", got)
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Errorf("no reload logged:\n%s", logs.String())
	}
}

// TestServerOverRealTLS: a real HTTPS server with Server's config speaks
// HTTP/2, picks up a rotated certificate without a restart, and with a
// client CA verifies a client's certificate and fails a handshake with a
// certificate from elsewhere.
func TestServerOverRealTLS(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t, "server CA")
	cert, key := ca.Server(t, 20).Files(t)
	cfg, err := Server(Files{Cert: cert, Key: key, ClientCA: ca.CertFile}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) > 0 {
			w.Header().Set("Client", r.TLS.VerifiedChains[0][0].Subject.CommonName)
		}
	})}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	url := "https://" + ln.Addr().String() + "/"
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	client := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: certs},
			ForceAttemptHTTP2: true, DisableKeepAlives: true,
		}}
	}
	get := func(c *http.Client) (*http.Response, error) {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
		}
		return resp, err
	}

	resp, err := get(client())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Proto != "HTTP/2.0" || resp.TLS.NegotiatedProtocol != "h2" {
		t.Errorf("proto %s (ALPN %q), want HTTP/2.0 over h2", resp.Proto, resp.TLS.NegotiatedProtocol)
	}
	if got := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); got != 20 {
		t.Errorf("served serial %d, want 20", got)
	}

	// A client without the CA fails with a certificate error.
	if _, err := get(&http.Client{Timeout: 10 * time.Second}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the CA: %v, want a certificate error", err)
	}

	// A client certificate from the CA is verified; one from another CA
	// fails the handshake.
	cl := ca.Client(t, 30, "alice")
	pair, err := tls.X509KeyPair(cl.CertPEM, cl.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := get(client(pair)); err != nil || resp.Header.Get("Client") != "alice" {
		t.Errorf("with a client certificate: %v (client %q), want alice verified", err, resp.Header.Get("Client"))
	}
	stranger := tlstest.NewCA(t, "stranger").Client(t, 31, "mallory")
	spair, _ := tls.X509KeyPair(stranger.CertPEM, stranger.KeyPEM)
	forced := client()
	forced.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &spair, nil // sent although the server names another CA
	}
	if _, err := get(forced); err == nil {
		t.Error("a client certificate of another CA was accepted")
	}

	// Rotation, checked on a later handshake (bounded wait).
	rotate(t, ca.Server(t, 21, "rotated.example"), cert, key, time.Now().Add(time.Minute))
	deadline := time.Now().Add(3 * DefaultCheckInterval)
	for {
		resp, err := get(client())
		if err == nil && resp.TLS.PeerCertificates[0].SerialNumber.Int64() == 21 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotated certificate not served within %s (last: %v)", 3*DefaultCheckInterval, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// kubeMount lays files out as Kubernetes mounts a Secret or ConfigMap:
// dir/NAME -> ..data/NAME, ..data -> ..<version>; swap replaces the
// version directory the way kubelet's atomic writer does (a new directory,
// then ..data renamed over), and moves its mtime on.
type kubeMount struct {
	t       *testing.T
	dir     string
	version int
}

func newKubeMount(t *testing.T, files map[string][]byte) *kubeMount {
	m := &kubeMount{t: t, dir: t.TempDir()}
	m.swap(files, time.Now())
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(m.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (m *kubeMount) path(name string) string { return filepath.Join(m.dir, name) }

func (m *kubeMount) swap(files map[string][]byte, at time.Time) {
	m.t.Helper()
	m.version++
	vdir := fmt.Sprintf("..2026_%02d", m.version)
	if err := os.Mkdir(filepath.Join(m.dir, vdir), 0o755); err != nil {
		m.t.Fatal(err)
	}
	for name, b := range files {
		p := filepath.Join(m.dir, vdir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			m.t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			m.t.Fatal(err)
		}
	}
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(vdir, tmp); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
}

// TestServerReloadsClientCA: the client CA file, mounted the Kubernetes
// way, is swapped for another CA's while the server runs; without a
// restart, a client certificate of the new CA is accepted and one of the
// old CA is refused. The serving certificate, mounted the same way, is
// rotated by the same swap.
func TestServerReloadsClientCA(t *testing.T) {
	t.Parallel()
	serverCA := tlstest.NewCA(t, "server CA")
	oldCA, newCA := tlstest.NewCA(t, "old client CA"), tlstest.NewCA(t, "new client CA")
	pem := func(ca *tlstest.CA) []byte {
		b, err := os.ReadFile(ca.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	leaf := serverCA.Server(t, 40)
	mount := newKubeMount(t, map[string][]byte{"tls.crt": leaf.CertPEM, "tls.key": leaf.KeyPEM, "ca.crt": pem(oldCA)})
	var logs syncBuffer
	cfg, err := Server(Files{Cert: mount.path("tls.crt"), Key: mount.path("tls.key"), ClientCA: mount.path("ca.crt")},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{TLSConfig: cfg, ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "no client certificate", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Client", r.TLS.VerifiedChains[0][0].Subject.CommonName)
	})}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		_ = srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.Cert)
	// get sends a request with a client certificate of ca (sent whatever
	// CAs the server names) and returns the served serial.
	get := func(ca *tlstest.CA, cn string) (int64, error) {
		l := ca.Client(t, 50, cn)
		pair, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{
			RootCAs:              roots,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil },
		}}}
		resp, err := c.Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Client") != cn {
			return 0, fmt.Errorf("status %s, client %q", resp.Status, resp.Header.Get("Client"))
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64(), nil
	}
	if _, err := get(oldCA, "alice"); err != nil {
		t.Fatalf("a client of the configured CA: %v", err)
	}
	if _, err := get(newCA, "bob"); err == nil {
		t.Fatal("a client of a CA not yet configured was accepted")
	}

	rotated := serverCA.Server(t, 41)
	mount.swap(map[string][]byte{"tls.crt": rotated.CertPEM, "tls.key": rotated.KeyPEM, "ca.crt": pem(newCA)}, time.Now().Add(time.Minute))
	deadline := time.Now().Add(3 * DefaultCheckInterval)
	for {
		serial, err := get(newCA, "bob")
		if err == nil && serial == 41 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the swap: a client of the new CA got serial %d, %v within %s; want serial 41 and accepted\n%s", serial, err, 3*DefaultCheckInterval, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := get(oldCA, "alice"); err == nil {
		t.Error("after the swap, a client of the old CA is still accepted")
	}
	if !strings.Contains(logs.String(), "TLS client CA reloaded") {
		t.Errorf("no client CA reload logged:\n%s", logs.String())
	}
}
