// Package upstream is a client for one upstream OCI registry (Docker Hub,
// ghcr.io, any Distribution-compatible registry) in mirror mode: it
// resolves tags with HEAD, fetches manifests with a size bound and digest
// checks, and streams blobs with resumption after a broken stream. It does
// the Bearer token flow and Basic auth with credentials from an injected
// store, reads Docker Hub's rate-limit headers and backs off on 429.
//
// It imports nothing of meshreg's: the clock, the credentials store, the
// HTTP client and the metrics observer are injected through Config.
// A Registry is safe for concurrent use.
package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Config describes one upstream registry.
type Config struct {
	Name        string      // the registry host clients mean, e.g. "docker.io", "127.0.0.1:5999"
	URL         string      // e.g. "https://registry-1.docker.io"
	CAFile      string      // extra CA (PEM) to trust; "" = system roots
	SkipVerify  bool        // tests only
	Credentials Credentials // nil = anonymous
	// Client is an optional base (tests). When it has an *http.Transport,
	// CAFile and SkipVerify are applied to a clone of it. Otherwise New
	// builds a client with bounded dial/TLS/response-header timeouts.
	Client *http.Client
	Now    func() time.Time // optional clock
	Logger *slog.Logger
	// Observer, if set, is told about every response and byte count, so the
	// caller can export per-upstream metrics.
	Observer Observer
	// IdleTimeout aborts (and resumes) a blob body that delivers no byte for
	// this long; 0 = DefaultIdleTimeout.
	IdleTimeout time.Duration
	// RequestTimeout bounds a whole manifest/HEAD/token request; 0 =
	// DefaultRequestTimeout. Blob bodies have no total bound.
	RequestTimeout time.Duration
}

// Observer receives what happened upstream. Methods are called from the
// goroutines making requests and must be fast and concurrency-safe.
type Observer interface {
	// OnResponse: op is "resolve", "manifest", "blob", "stat-blob" or
	// "token"; status is the HTTP status, 0 for a network error or timeout.
	OnResponse(op string, status int)
	// OnBytes counts body bytes received for op ("manifest" or "blob").
	OnBytes(op string, n int64)
}

// Status is what the last requests to the upstream showed.
type Status struct {
	LastSuccess   time.Time
	LastError     string
	LastErrorAt   time.Time
	RateLimit     int // from ratelimit-limit; 0 = never seen
	RateRemaining int // from ratelimit-remaining; -1 = never seen
	BackoffUntil  time.Time
}

// Defaults and bounds.
const (
	DefaultIdleTimeout    = 60 * time.Second
	DefaultRequestTimeout = 60 * time.Second
	dialTimeout           = 10 * time.Second
	tlsTimeout            = 10 * time.Second
	headerTimeout         = 30 * time.Second
	maxResponseHeader     = 256 << 10
	maxErrorBody          = 64 << 10
	maxCAFileBytes        = 4 << 20
)

// Registry is a client for one upstream.
type Registry struct {
	name        string
	base        *url.URL
	client      *http.Client
	creds       Credentials
	now         func() time.Time
	log         *slog.Logger
	obs         Observer
	idle        time.Duration
	reqTimeout  time.Duration
	retryWait   time.Duration // first backoff between blob resumptions
	maxResumes  int
	maxRedirect int

	tokenFlight singleflight.Group

	mu     sync.Mutex
	tokens map[string]cachedToken // by scope
	basic  bool                   // the upstream asked for Basic auth
	status Status
	// error log de-duplication
	lastLogged   string
	lastLoggedAt time.Time
	repeats      int
}

// New checks cfg and builds the client. It does not contact the upstream.
func New(cfg Config) (*Registry, error) {
	if cfg.Name == "" {
		return nil, errors.New("upstream: a name is required (the registry host clients use, e.g. docker.io)")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %s: URL %q must be http(s)://host[:port]", cfg.Name, cfg.URL)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream %s: URL %q must not carry user info, query or fragment (put credentials in --upstream-credentials)", cfg.Name, redactURL(u))
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	client, err := buildClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", cfg.Name, err)
	}
	r := &Registry{
		name:       cfg.Name,
		base:       u,
		client:     client,
		creds:      cfg.Credentials,
		now:        cfg.Now,
		log:        cfg.Logger,
		obs:        cfg.Observer,
		idle:       cfg.IdleTimeout,
		reqTimeout: cfg.RequestTimeout,
		retryWait:  200 * time.Millisecond,
		maxResumes: 5,
		tokens:     map[string]cachedToken{},
		status:     Status{RateRemaining: -1},
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("upstream", cfg.Name)
	if r.obs == nil {
		r.obs = nopObserver{}
	}
	if r.idle <= 0 {
		r.idle = DefaultIdleTimeout
	}
	if r.reqTimeout <= 0 {
		r.reqTimeout = DefaultRequestTimeout
	}
	return r, nil
}

// Name is Config.Name.
func (r *Registry) Name() string { return r.name }

// URL is the upstream's base URL.
func (r *Registry) URL() string { return r.base.String() }

// CloseIdleConnections closes the client's idle keep-alive connections
// (at shutdown, and in tests before checking for leaked goroutines).
func (r *Registry) CloseIdleConnections() { r.client.CloseIdleConnections() }

// Status returns a copy of what the last requests showed.
func (r *Registry) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

type nopObserver struct{}

func (nopObserver) OnResponse(string, int) {}
func (nopObserver) OnBytes(string, int64)  {}

func buildClient(cfg Config) (*http.Client, error) {
	var tlsCfg *tls.Config
	if cfg.CAFile != "" || cfg.SkipVerify {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.SkipVerify} //nolint:gosec // tests only, documented
		if cfg.CAFile != "" {
			pool, err := x509.SystemCertPool()
			if err != nil || pool == nil {
				pool = x509.NewCertPool()
			}
			fi, err := os.Stat(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("CA file: %w", err)
			}
			if fi.Size() > maxCAFileBytes {
				return nil, fmt.Errorf("CA file %s is larger than %d bytes", cfg.CAFile, maxCAFileBytes)
			}
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, fmt.Errorf("CA file: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("CA file %s holds no PEM certificate", cfg.CAFile)
			}
			tlsCfg.RootCAs = pool
		}
	}
	if cfg.Client != nil {
		c := *cfg.Client
		if tlsCfg != nil {
			rt := c.Transport
			if rt == nil {
				rt = http.DefaultTransport
			}
			tr, ok := rt.(*http.Transport)
			if !ok {
				return nil, errors.New("CAFile and SkipVerify need the client's Transport to be an *http.Transport")
			}
			tr = tr.Clone()
			tr.TLSClientConfig = tlsCfg
			c.Transport = tr
		}
		return &c, nil
	}
	tr := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:    tlsTimeout,
		ResponseHeaderTimeout:  headerTimeout,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConnsPerHost:    16,
		MaxResponseHeaderBytes: maxResponseHeader,
		ForceAttemptHTTP2:      true,
		TLSClientConfig:        tlsCfg,
	}
	// No Client.Timeout: blob bodies are long; requests bound themselves
	// (RequestTimeout for metadata, the idle timeout for blob bodies).
	return &http.Client{Transport: tr, CheckRedirect: checkRedirect}, nil
}

// checkRedirect follows at most 10 redirects and only to http(s) URLs; Go
// drops Authorization when the host changes (blob downloads redirect to a
// CDN with a signed URL).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("redirect to a %q URL refused", req.URL.Scheme)
	}
	return nil
}

func redactURL(u *url.URL) string {
	c := *u
	if c.User != nil {
		c.User = url.User("xxxxx")
	}
	return c.String()
}

// recordSuccess notes a conversation with the upstream that worked.
func (r *Registry) recordSuccess() {
	r.mu.Lock()
	r.status.LastSuccess = r.now()
	r.mu.Unlock()
}

// errorLogEvery bounds how often the same failure is logged again: an
// outage fails every request, and one line per request would bury the rest.
const errorLogEvery = 30 * time.Second

// recordError notes a failure for Status and logs it at WARN (the same
// text at most once per errorLogEvery, with the count of repeats).
func (r *Registry) recordError(err error) {
	text, now := err.Error(), r.now()
	r.mu.Lock()
	r.status.LastError = text
	r.status.LastErrorAt = now
	log := text != r.lastLogged || now.Sub(r.lastLoggedAt) >= errorLogEvery || now.Before(r.lastLoggedAt)
	repeats := r.repeats
	if log {
		r.lastLogged, r.lastLoggedAt, r.repeats = text, now, 0
	} else {
		r.repeats++
	}
	r.mu.Unlock()
	if log {
		r.log.Warn("upstream request failed", "err", text, "repeats_not_logged", repeats)
	}
}
