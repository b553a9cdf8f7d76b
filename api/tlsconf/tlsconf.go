// Package tlsconf makes the TLS configuration of a node's API listener:
// the serving certificate, re-read from its files when they change (as
// cert-manager rotates them), and the optional client CA, re-read likewise.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"
)

// DefaultCheckInterval is how often, at most, a Reloader looks at its
// files' size and modification time (on a handshake, never in the
// background).
const DefaultCheckInterval = 2 * time.Second

// Files names the PEM files of a TLS setup: Cert and Key (both or
// neither) and ClientCA (only with them).
type Files struct {
	Cert, Key, ClientCA string
}

// Enabled reports whether the files ask for TLS at all.
func (f Files) Enabled() bool { return f.Cert != "" || f.Key != "" }

// Check loads every file named, as Server would, and says what is wrong
// with them: one of cert and key without the other, a client CA without
// them, a pair that does not load or match, a CA file with no
// certificate. It opens no socket.
func (f Files) Check() error {
	switch {
	case f.Cert != "" && f.Key == "":
		return errors.New("--tls-cert needs --tls-key (the certificate's private key)")
	case f.Key != "" && f.Cert == "":
		return errors.New("--tls-key needs --tls-cert (the certificate of that key)")
	case f.ClientCA != "" && f.Cert == "":
		return errors.New("--tls-client-ca needs --tls-cert and --tls-key: client certificates are asked for over TLS only")
	case f.Cert == "":
		return nil
	}
	if _, err := loadPair(f.Cert, f.Key); err != nil {
		return err
	}
	if f.ClientCA != "" {
		if _, err := loadPool(f.ClientCA); err != nil {
			return err
		}
	}
	return nil
}

// Server returns the TLS configuration of the API listener: the
// certificate comes from a Reloader over f.Cert and f.Key; HTTP/2 and
// HTTP/1.1 are offered. With f.ClientCA, a client certificate is verified
// against that CA (re-read when the file changes, see CAReloader) when one
// is sent (a bad one fails the handshake);
// whether a request without one is served is the HTTP handler's call, so
// that health probes keep working (see api.Config.RequireClientCert).
func Server(f Files, log *slog.Logger) (*tls.Config, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	r, err := NewReloader(f.Cert, f.Key, log)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	if f.ClientCA != "" {
		cas, err := NewCAReloader(f.ClientCA, log)
		if err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		base := cfg.Clone()
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return cas.configFor(base), nil }
	}
	return cfg, nil
}

func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", certFile, keyFile, err)
	}
	return &c, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--tls-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--tls-client-ca %s: no PEM certificate in the file", file)
	}
	return pool, nil
}

// stamp is what a reloader compares to notice a file changed.
type stamp struct {
	mod  time.Time
	size int64
}

func stampOf(file string) (stamp, error) {
	fi, err := os.Stat(file) // follows symlinks: a Kubernetes Secret mount swaps ..data
	if err != nil {
		return stamp{}, err
	}
	return stamp{fi.ModTime(), fi.Size()}, nil
}

// watched is a value loaded from files and loaded again when their size
// or modification time changes, looked at most once per CheckInterval,
// when the value is asked for (never in the background). A change that
// does not load (a half-written file, a key that does not match) is
// logged once as an error and the previous value is kept; it is tried
// again when the files change again. Its methods are safe for concurrent
// use.
type watched[T any] struct {
	what  string   // "TLS certificate", for the logs
	files []string // the files, in flags' order
	flags []string // their flags, for errors
	load  func() (T, error)
	log   *slog.Logger
	// CheckInterval is how often, at most, the files are looked at; set
	// it before the first handshake.
	CheckInterval time.Duration
	now           func() time.Time

	mu     sync.Mutex
	cur    T
	loaded []stamp // the stamps of the files cur came from
	failed []stamp // the stamps of the last change that did not load
	// unreadable is set while a file cannot be stat'ed (logged once).
	unreadable bool
	checked    time.Time
}

// init loads the value once; an error there is the caller's (the node
// does not start without it).
func (w *watched[T]) init() error {
	w.CheckInterval, w.now = DefaultCheckInterval, time.Now
	st, err := w.stamps()
	if err != nil {
		return err
	}
	v, err := w.load()
	if err != nil {
		return err
	}
	w.cur, w.loaded, w.checked = v, st, w.now()
	return nil
}

func (w *watched[T]) stamps() ([]stamp, error) {
	st := make([]stamp, len(w.files))
	for i, f := range w.files {
		var err error
		if st[i], err = stampOf(f); err != nil {
			return nil, fmt.Errorf("%s: %w", w.flags[i], err)
		}
	}
	return st, nil
}

// current returns the value now, loading it again first if the files
// changed and CheckInterval has passed since the last look; reloaded is
// true when it did.
func (w *watched[T]) current() (v T, reloaded bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if now.Sub(w.checked) < w.CheckInterval {
		return w.cur, false
	}
	w.checked = now
	st, err := w.stamps()
	if err != nil {
		if !w.unreadable {
			w.unreadable = true
			w.log.Error(w.what+" files unreadable: serving with the previous one", "err", err)
		}
		return w.cur, false
	}
	w.unreadable = false
	if slices.Equal(st, w.loaded) || slices.Equal(st, w.failed) {
		return w.cur, false
	}
	v, err = w.load()
	if err != nil {
		w.failed = st
		w.log.Error(w.what+" changed but does not load: serving with the previous one", "err", err)
		return w.cur, false
	}
	w.cur, w.loaded = v, st
	return v, true
}

// A Reloader serves a certificate and key pair from two files and loads
// them again when their size or modification time changes (see watched:
// at most once per CheckInterval, during a handshake; a pair that does
// not load is logged once and the previous one kept). Its methods are
// safe for concurrent use.
type Reloader struct {
	watched[*tls.Certificate]
	certFile string
}

// NewReloader loads the pair once; an error there is the caller's (the
// node does not start without a certificate).
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{certFile: certFile}
	r.watched = watched[*tls.Certificate]{
		what: "TLS certificate", files: []string{certFile, keyFile}, flags: []string{"--tls-cert", "--tls-key"},
		load: func() (*tls.Certificate, error) { return loadPair(certFile, keyFile) }, log: log,
	}
	if err := r.init(); err != nil {
		return nil, err
	}
	return r, nil
}

// GetCertificate is tls.Config.GetCertificate: the current pair, after a
// reload if one is due and the files changed.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// Current returns the pair served now, reloading it first if the files
// changed and CheckInterval has passed since the last look.
func (r *Reloader) Current() *tls.Certificate {
	c, reloaded := r.current()
	if reloaded {
		r.log.Info("TLS certificate reloaded", "cert", r.certFile, "not_after", leafNotAfter(c))
	}
	return c
}

// A CAReloader serves the pool of client CA certificates of one PEM file
// and loads it again when the file changes, like a Reloader (so a CA
// bundle rotated by cert-manager or a swapped Secret is trusted without a
// restart). Its methods are safe for concurrent use.
type CAReloader struct {
	watched[*x509.CertPool]
	file string

	mu   sync.Mutex
	pool *x509.CertPool // the pool cfg was made for
	cfg  *tls.Config
}

// NewCAReloader loads file once; an error there is the caller's.
func NewCAReloader(file string, log *slog.Logger) (*CAReloader, error) {
	r := &CAReloader{file: file}
	r.watched = watched[*x509.CertPool]{
		what: "TLS client CA", files: []string{file}, flags: []string{"--tls-client-ca"},
		load: func() (*x509.CertPool, error) { return loadPool(file) }, log: log,
	}
	if err := r.init(); err != nil {
		return nil, err
	}
	return r, nil
}

// Current returns the pool trusted now, reloading it first if the file
// changed and CheckInterval has passed since the last look.
func (r *CAReloader) Current() *x509.CertPool {
	p, reloaded := r.current()
	if reloaded {
		r.log.Info("TLS client CA reloaded", "client_ca", r.file)
	}
	return p
}

// configFor returns base with ClientCAs set to the current pool: the same
// *tls.Config until the pool changes, so that session tickets survive
// between handshakes.
func (r *CAReloader) configFor(base *tls.Config) *tls.Config {
	pool := r.Current()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg == nil || r.pool != pool {
		c := base.Clone()
		c.ClientCAs, c.GetConfigForClient = pool, nil
		r.pool, r.cfg = pool, c
	}
	return r.cfg
}

func leafNotAfter(c *tls.Certificate) time.Time {
	if c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	if len(c.Certificate) > 0 {
		if l, err := x509.ParseCertificate(c.Certificate[0]); err == nil {
			return l.NotAfter
		}
	}
	return time.Time{}
}

// ClientFiles names the PEM files of a client of a node's API: CA, a
// CA (bundle) trusted besides the system's roots; Cert and Key (both or
// neither), a client certificate to present, for a node with
// --tls-client-ca. Flags name the flags they come from, for errors.
type ClientFiles struct {
	CA, Cert, Key             string
	CAFlag, CertFlag, KeyFlag string
}

// Client returns the TLS configuration of an HTTP client of a node's API,
// or nil when f names no file (the system's defaults then). The files are
// read once.
func Client(f ClientFiles) (*tls.Config, error) {
	switch {
	case f.CA == "" && f.Cert == "" && f.Key == "":
		return nil, nil
	case f.Cert != "" && f.Key == "":
		return nil, fmt.Errorf("%s needs %s (the certificate's private key)", f.CertFlag, f.KeyFlag)
	case f.Key != "" && f.Cert == "":
		return nil, fmt.Errorf("%s needs %s (the certificate of that key)", f.KeyFlag, f.CertFlag)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool() // no system roots here: the CA alone
		}
		b, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.CAFlag, err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("%s %s: no PEM certificate in the file", f.CAFlag, f.CA)
		}
		cfg.RootCAs = pool
	}
	if f.Cert != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("%s %s / %s %s: %w", f.CertFlag, f.Cert, f.KeyFlag, f.Key, err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// HTTPClient returns an HTTP client for occasional requests to nodes (a
// CLI command, a join): f's TLS configuration (see Client), the timeout
// given, its own transport and no idle connection kept, so that no node
// waits on one when it shuts down.
func HTTPClient(f ClientFiles, timeout time.Duration) (*http.Client, error) {
	cfg, err := Client(f)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig, tr.DisableKeepAlives = cfg, true
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}
