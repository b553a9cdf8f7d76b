// Package tlsconf makes the TLS configuration of a node's API listener:
// the serving certificate, re-read from its files when they change (as
// cert-manager rotates them), and the optional client CA.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
// against that CA when one is sent (a bad one fails the handshake);
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
		pool, err := loadPool(f.ClientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
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

// stamp is what a Reloader compares to notice a file changed.
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

// A Reloader serves a certificate and key pair from two files and loads
// them again when their size or modification time changes, looking at
// most once per CheckInterval, during a handshake. A new pair that does
// not load (a half-written file, a key that does not match) is logged
// once as an error and the previous pair is kept; it is tried again when
// the files change again. Its methods are safe for concurrent use.
type Reloader struct {
	certFile, keyFile string
	log               *slog.Logger
	// CheckInterval is how often, at most, the files are looked at; set
	// it before the first handshake.
	CheckInterval time.Duration
	now           func() time.Time

	mu     sync.Mutex
	cert   *tls.Certificate
	loaded [2]stamp // the stamps of the files cert came from
	failed [2]stamp // the stamps of the last pair that did not load
	// unreadable is set while a file cannot be stat'ed (logged once).
	unreadable bool
	checked    time.Time
}

// NewReloader loads the pair once; an error there is the caller's (the
// node does not start without a certificate).
func NewReloader(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, CheckInterval: DefaultCheckInterval, now: time.Now}
	st, err := r.stamps()
	if err != nil {
		return nil, err
	}
	c, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert, r.loaded, r.checked = c, st, r.now()
	return r, nil
}

func (r *Reloader) stamps() ([2]stamp, error) {
	c, err := stampOf(r.certFile)
	if err != nil {
		return [2]stamp{}, fmt.Errorf("--tls-cert: %w", err)
	}
	k, err := stampOf(r.keyFile)
	if err != nil {
		return [2]stamp{}, fmt.Errorf("--tls-key: %w", err)
	}
	return [2]stamp{c, k}, nil
}

// GetCertificate is tls.Config.GetCertificate: the current pair, after a
// reload if one is due and the files changed.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// Current returns the pair served now, reloading it first if the files
// changed and CheckInterval has passed since the last look.
func (r *Reloader) Current() *tls.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	if now.Sub(r.checked) < r.CheckInterval {
		return r.cert
	}
	r.checked = now
	st, err := r.stamps()
	if err != nil {
		if !r.unreadable {
			r.unreadable = true
			r.log.Error("TLS certificate files unreadable: serving the previous certificate", "err", err)
		}
		return r.cert
	}
	r.unreadable = false
	if st == r.loaded || st == r.failed {
		return r.cert
	}
	c, err := loadPair(r.certFile, r.keyFile)
	if err != nil {
		r.failed = st
		r.log.Error("TLS certificate changed but does not load: serving the previous certificate", "err", err)
		return r.cert
	}
	r.cert, r.loaded = c, st
	r.log.Info("TLS certificate reloaded", "cert", r.certFile, "not_after", leafNotAfter(c))
	return r.cert
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
