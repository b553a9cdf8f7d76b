// Package api serves the OCI Distribution API (/v2/) and a node's
// operational endpoints over HTTP. It knows nothing of storage or
// clustering: it validates requests, calls a Registry, and writes responses
// and the spec's error bodies.
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/oci"
)

// Config holds the HTTP layer's limits.
type Config struct {
	// MaxManifestSize is the largest manifest accepted, in bytes.
	MaxManifestSize int64
	// BodyIdleTimeout closes a request whose body sends nothing for this
	// long, so a stalled client cannot hold an upload open forever.
	BodyIdleTimeout time.Duration
	// ClientIdleTimeout closes a connection whose client reads nothing of
	// the response for this long (renewed as bytes flow, so a big blob on
	// a slow link still works).
	ClientIdleTimeout time.Duration
	// MaxWritesPerClient bounds the requests with a body (uploads, manifest
	// PUTs) one client has in flight at once; more get 429.
	MaxWritesPerClient int
	// MaxListPage bounds the n of tag and catalog listings.
	MaxListPage int
	// RequireClientCert refuses, with 401 UNAUTHORIZED, every request but
	// the health probes (/healthz, /readyz) that did not come over TLS with
	// a client certificate the listener verified (--tls-client-ca). The
	// handshake already failed for a certificate that does not verify.
	RequireClientCert bool
	// Auth turns authentication and access control on for /v2/ and the
	// admin endpoints; nil leaves /v2/ open and admin to loopback clients.
	Auth *auth.Guard
	// RateLimits turns rate limits on for /v2/ (health probes, metrics and
	// admin endpoints are never limited); nil limits nothing.
	RateLimits RateLimiter
	// Tokens serves the token endpoint (/_meshreg/v1/token) when not nil;
	// it needs Auth (whose Authenticator verifies the tokens).
	Tokens TokenService
	// Mirror routes pulls to upstream registries (mirror.go).
	Mirror Mirroring
	// Notifier is told each acknowledged push and delete, and each pull
	// (--notifications); nil tells nothing.
	Notifier Notifier
}

// DefaultConfig returns the limits a registry operator would expect.
func DefaultConfig() Config {
	return Config{
		MaxManifestSize:   4 << 20,
		BodyIdleTimeout:   60 * time.Second,
		ClientIdleTimeout: 60 * time.Second,
		MaxListPage:       10000,

		MaxWritesPerClient: 64,
	}
}

// Ranges of the limits that Validate accepts.
const (
	MinMaxManifestSize = 1 << 10
	MaxMaxManifestSize = 64 << 20
	MinIdleTimeout     = 10 * time.Millisecond
	MaxIdleTimeout     = time.Hour
	MaxMaxListPage     = 1 << 20
	// MaxMaxWritesPerClient is the upper bound of MaxWritesPerClient.
	MaxMaxWritesPerClient = 100_000
)

// Validate reports the first limit that makes no sense, naming the flag
// that sets it and the range it accepts.
func (c Config) Validate() error {
	switch {
	case c.MaxManifestSize < MinMaxManifestSize || c.MaxManifestSize > MaxMaxManifestSize:
		return fmt.Errorf("api: --max-manifest-size %d is out of range: use %d to %d bytes", c.MaxManifestSize, MinMaxManifestSize, MaxMaxManifestSize)
	case c.BodyIdleTimeout < MinIdleTimeout || c.BodyIdleTimeout > MaxIdleTimeout:
		return fmt.Errorf("api: --body-idle-timeout %s is out of range: use %s to %s", c.BodyIdleTimeout, MinIdleTimeout, MaxIdleTimeout)
	case c.ClientIdleTimeout < MinIdleTimeout || c.ClientIdleTimeout > MaxIdleTimeout:
		return fmt.Errorf("api: --client-idle-timeout %s is out of range: use %s to %s", c.ClientIdleTimeout, MinIdleTimeout, MaxIdleTimeout)
	case c.MaxWritesPerClient < 1 || c.MaxWritesPerClient > MaxMaxWritesPerClient:
		return fmt.Errorf("api: --max-writes-per-client %d is out of range: use 1 to %d", c.MaxWritesPerClient, MaxMaxWritesPerClient)
	case c.MaxListPage <= 0 || c.MaxListPage > MaxMaxListPage:
		return fmt.Errorf("api: max list page %d is out of range: use 1 to %d", c.MaxListPage, MaxMaxListPage)
	case c.Auth != nil && (c.Auth.Authn == nil || c.Auth.Authz == nil):
		return errors.New("api: authentication needs both an authenticator and an authorizer")
	case c.Tokens != nil && c.Auth == nil:
		return errors.New("api: the token service needs authentication on")
	}
	return nil
}

// Handler serves /v2/ and the operational endpoints.
type Handler struct {
	cfg     Config
	reg     Registry
	node    Node
	metrics *Metrics
	log     *slog.Logger
	mux     *http.ServeMux
	writes  *writeGate
	pages   chan struct{} // status pages being built (uiConcurrentRenders)
}

// New returns the HTTP handler of a node. metrics may be nil.
func New(cfg Config, reg Registry, node Node, metrics *Metrics, log *slog.Logger) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, reg: reg, node: node, metrics: metrics, log: log, writes: newWriteGate(cfg.MaxWritesPerClient),
		pages: make(chan struct{}, uiConcurrentRenders)}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("GET /healthz", h.healthz)
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /_meshreg/v1/status", h.status)
	h.mux.HandleFunc("GET /_meshreg/ui/{$}", h.statusPage)
	h.mux.Handle("GET /_meshreg/ui", http.RedirectHandler("/_meshreg/ui/", http.StatusMovedPermanently))
	h.mux.HandleFunc("DELETE /_meshreg/v1/members/{id}", h.adminOnly(h.removeMember))
	h.mux.HandleFunc("GET /_meshreg/v1/nodes", h.adminOnly(h.nodes)) // nodes.go
	h.mux.HandleFunc("POST /_meshreg/v1/join-tokens", h.adminOnly(h.createJoinToken))
	h.mux.HandleFunc("GET /_meshreg/v1/backup", h.adminOnly(h.backup)) // backup.go
	if cfg.Tokens != nil {
		h.mux.HandleFunc("GET /_meshreg/v1/token", h.token)
		h.mux.HandleFunc("POST /_meshreg/v1/token", h.token)
	}
	h.mux.HandleFunc("POST /_meshreg/v1/gc", h.adminOnly(h.collectGarbage))
	h.mux.HandleFunc("GET /_meshreg/v1/policy", h.adminOnly(h.getPolicy))
	h.mux.HandleFunc("PUT /_meshreg/v1/policy", h.adminOnly(h.putPolicy))
	h.mux.HandleFunc("GET /_meshreg/v1/policy/usage", h.adminOnly(h.policyUsage))
	if metrics != nil {
		h.mux.Handle("GET /metrics", metrics.handler())
	}
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	iw := newIdleWriter(w, h.cfg.ClientIdleTimeout)
	defer iw.renew() // the server flushes the response after we return
	// After we return, net/http reads what is left of a small request body
	// (up to 256 KiB) before it answers, with no deadline of its own: a
	// client trickling a body we refused unread would hold its connection
	// for good. Give that read the body idle timeout.
	defer iw.bodyDeadline(h.cfg.BodyIdleTimeout)
	w, r = iw, r.WithContext(WithClient(r.Context(), remoteClient(r)))
	if h.cfg.RequireClientCert && !isProbe(r.URL.Path) && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		h.writeError(w, r, oci.Errorf(oci.Unauthorized, "a client certificate signed by this node's --tls-client-ca is required"))
		return
	}
	rt := parseRoute(r.URL.Path)
	if rt.kind == routeUnknown && !isV2(r.URL.Path) {
		h.mux.ServeHTTP(w, r)
		return
	}
	if h.metrics != nil {
		h.metrics.serve(rt.kind.String(), w, r, h.serveV2Route(rt))
		return
	}
	h.serveV2Route(rt)(w, r)
}

// isProbe reports whether path is a health probe, which is served to
// every caller (a kubelet sends no client certificate).
func isProbe(path string) bool { return path == "/healthz" || path == "/readyz" }

func isV2(path string) bool { return path == "/v2" || len(path) >= 4 && path[:4] == "/v2/" }

// serveV2Route returns the handler of one /v2/ route.
func (h *Handler) serveV2Route(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		release, err := h.writes.admit(r)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		defer release()
		if err := h.dispatch(w, r, rt); err != nil {
			h.writeError(w, r, err)
		}
	}
}

// handlerFunc is a handler that returns its error for writeError.
type handlerFunc func(http.ResponseWriter, *http.Request, route) error

func (h *Handler) dispatch(w http.ResponseWriter, r *http.Request, rt route) error {
	if err := checkQuery(r); err != nil {
		return err
	}
	methods := h.methods(rt.kind)
	if methods == nil {
		return oci.Errorf(oci.Unsupported, "no such endpoint %s: see the OCI distribution spec for the /v2/ routes", truncate(r.URL.Path)).WithStatus(http.StatusNotFound)
	}
	if rt.kind != routeBase && rt.kind != routeCatalog {
		if err := validateName(rt.name); err != nil {
			return err
		}
	}
	fn, ok := methods[r.Method]
	if !ok && r.Method == http.MethodHead {
		fn, ok = methods[http.MethodGet]
	}
	if !ok {
		w.Header().Set("Allow", allowed(methods))
		return oci.Errorf(oci.Unsupported, "method %.20q is not supported on %s: use %s", r.Method, rt.kind, allowed(methods))
	}
	rt, err := h.routeMirror(r, rt)
	if err != nil {
		return err
	}
	var denied error
	if h.cfg.Auth != nil {
		r, denied = h.authorize(r, rt)
	}
	if h.cfg.RateLimits != nil {
		// A refused request (a wrong password too) is charged to its
		// client, so guessing is limited, but not to the repository,
		// whose bucket only clients allowed in may drain.
		if err := h.rateLimit(w, r, rt, denied == nil); err != nil {
			return err
		}
	}
	if denied != nil {
		return denied
	}
	if (r.Method == http.MethodGet || r.Method == http.MethodHead) && r.URL.Query().Get("consistent") == "1" {
		if b, ok := h.reg.(Barrier); ok {
			if err := b.Barrier(r.Context()); err != nil {
				return oci.Wrap(oci.Unavailable, err, "a consistent read needs the leader, which is unreachable: retry, or read without consistent=1").WithRetryAfter(time.Second)
			}
		}
	}
	return fn(w, r, rt)
}

func (h *Handler) methods(k routeKind) map[string]handlerFunc {
	switch k {
	case routeBase:
		return map[string]handlerFunc{http.MethodGet: h.base}
	case routeCatalog:
		return map[string]handlerFunc{http.MethodGet: h.catalog}
	case routeManifest:
		return map[string]handlerFunc{http.MethodGet: h.getManifest, http.MethodPut: h.putManifest, http.MethodDelete: h.deleteManifest}
	case routeBlob:
		return map[string]handlerFunc{http.MethodGet: h.getBlob, http.MethodDelete: h.deleteBlob}
	case routeUploads:
		return map[string]handlerFunc{http.MethodPost: h.startUpload}
	case routeUpload:
		return map[string]handlerFunc{http.MethodGet: h.uploadStatus, http.MethodPatch: h.patchUpload, http.MethodPut: h.putUpload, http.MethodDelete: h.cancelUpload}
	case routeTags:
		return map[string]handlerFunc{http.MethodGet: h.tags}
	case routeReferrers:
		return map[string]handlerFunc{http.MethodGet: h.referrers}
	}
	return nil
}

// allowed lists the methods of a route for the Allow header.
func allowed(methods map[string]handlerFunc) string {
	var out []string
	for m := range methods {
		out = append(out, m)
	}
	if methods[http.MethodGet] != nil {
		out = append(out, http.MethodHead)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func (h *Handler) base(w http.ResponseWriter, r *http.Request, _ route) error {
	writeJSON(w, r, http.StatusOK, "application/json", struct{}{})
	return nil
}

func (h *Handler) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

func (h *Handler) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := h.node.Ready(r.Context()); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, r, http.StatusOK, "application/json", h.node.Status(r.Context()))
}

// removeMember removes a cluster member for good, or revokes a follower
// of the metadata for good (`meshreg cluster remove`): 204 for a member
// removed, 200 with "revoked follower ID" for a follower revoked.
func (h *Handler) removeMember(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	did, err := h.node.RemoveMember(r.Context(), id, identityFrom(r.Context()).String())
	if errors.Is(err, ErrAlreadyRevoked) {
		did = RevokedFollower
	}
	if rec, ok := w.(*statusRecorder); ok && did != "" {
		// The audit line names what was done.
		rec.op = map[Removal]string{RemovedMember: "remove", RevokedFollower: "revoke"}[did]
	}
	switch {
	case errors.Is(err, ErrNotMember):
		h.writeError(w, r, oci.Wrap(memberUnknown, err, err.Error()))
		return
	case errors.Is(err, ErrAlreadyRevoked):
		h.writeError(w, r, oci.Wrap(alreadyRevoked, err, err.Error()))
		return
	case err != nil:
		h.log.Warn("removing a cluster member failed", "member", id, "err", err)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusConflict)
		_, _ = fmt.Fprintf(w, "removing %s: %v\n", id, err)
		return
	case did == RevokedFollower:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = fmt.Fprintf(w, "revoked follower %s\n", id)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writeJSON writes v as a JSON response with an exact Content-Length.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, contentType string, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", itoa(int64(len(body))))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
