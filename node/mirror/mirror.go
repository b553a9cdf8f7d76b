package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/singleflight"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node/fetch"
)

// Upstream is what the mirror needs of an upstream registry client
// (node/upstream's Registry). Its errors match ErrNotFound,
// ErrUnauthorized and ErrUnavailable through Classify.
type Upstream interface {
	Name() string
	// Resolve HEADs a manifest (tag or digest): its descriptor.
	Resolve(ctx context.Context, repo, ref string) (ocispec.Descriptor, error)
	// Manifest GETs a manifest of at most max bytes, digest verified.
	Manifest(ctx context.Context, repo, ref string, max int64) (ocispec.Descriptor, []byte, error)
	// Blob streams a blob from offset.
	Blob(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error)
}

// The kinds of upstream failure the mirror tells apart.
var (
	// ErrNotFound: the upstream said the repository, tag or manifest does
	// not exist.
	ErrNotFound = errors.New("not found upstream")
	// ErrUnauthorized: the upstream refused the credentials (or their
	// absence).
	ErrUnauthorized = errors.New("upstream refused the credentials")
	// ErrUnavailable: the upstream is unreachable, failing (5xx), rate
	// limiting (429) or too slow: the last known answer is served.
	ErrUnavailable = errors.New("upstream unavailable")
)

// Store is the cluster's replicated state as the mirror reads and writes
// it (the node implements it over the metadata store). Writes go through
// Raft and return once applied on this node.
type Store interface {
	MirrorTag(repo, tag string) (consensus.MirrorTag, error)
	PutMirrorTag(ctx context.Context, repo, tag string, rec consensus.MirrorTag) error
	// HasManifest reports whether repo holds manifest d.
	HasManifest(repo string, d digest.Digest) bool
	// StoreManifest stores a manifest fetched from the upstream in repo
	// without requiring what it references (mirrored content is lazy),
	// and links the blobs it names to repo.
	StoreManifest(ctx context.Context, repo string, d digest.Digest, mediaType string, body []byte) error
}

// Status is one upstream as /_meshreg/v1/status shows it.
type Status struct {
	Name        string    `json:"name"`
	URL         string    `json:"url"`
	Revalidate  string    `json:"revalidate"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// Options are what a Mirror is made of besides its Config.
type Options struct {
	// Clients are the upstream clients by name; one per configured
	// upstream.
	Clients map[string]Upstream
	Store   Store
	// Revalidate asks the cluster to revalidate a tag once (the node
	// forwards it to the Raft leader, which calls Mirror.Revalidate); nil:
	// revalidate here.
	Revalidate func(ctx context.Context, upstream, repo, tag string) error
	// Classify maps an Upstream's error to ErrNotFound, ErrUnauthorized or
	// ErrUnavailable (or nil: another failure); nil: errors.Is on the
	// mirror's own sentinels.
	Classify func(err error) error
	// MaxManifest bounds a manifest fetched from an upstream.
	MaxManifest int64
	// Context ends the revalidations and manifest fetches in flight
	// (they outlive the request that started them, which others may wait
	// on); nil: never.
	Context context.Context
	Metrics *Metrics
	Now     func() time.Time
	Log     *slog.Logger
}

// Mirror answers mirrored tags and manifests. Safe for concurrent use.
type Mirror struct {
	cfg  Config
	opts Options
	ups  map[string]*upstream // by name
	byNS map[string]*upstream // by namespace

	flights singleflight.Group

	mu sync.Mutex
	// failed remembers, per tag, until when a failed revalidation is not
	// tried again: a down upstream costs one attempt per retryFailed, not
	// one per pull.
	failed map[string]failure
	// lastStale is when a stale answer was last logged, per upstream.
	lastStale map[string]time.Time
}

type upstream struct {
	cfg    UpstreamConfig
	client Upstream
	allow  []auth.RepoGlob

	mu          sync.Mutex
	lastSuccess time.Time
	lastError   string
	lastErrorAt time.Time
}

type failure struct {
	until time.Time
	err   error
}

// Bounds of the mirror's own memory and waits.
const (
	// retryFailed is how long a failed revalidation is answered from
	// memory before the upstream is asked again.
	retryFailed = 5 * time.Second
	// maxFailed bounds the failures remembered.
	maxFailed = 10000
	// staleLogEvery rate-limits the log line of stale answers per upstream.
	staleLogEvery = time.Minute
	// resolveTimeout bounds one revalidation (HEAD, maybe a GET and the
	// Raft writes), whoever waits for it.
	resolveTimeout = 30 * time.Second
)

// New returns the mirror of cfg; every upstream needs a client in opts.
func New(cfg Config, opts Options) (*Mirror, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Context == nil {
		opts.Context = context.Background()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxManifest <= 0 {
		opts.MaxManifest = 4 << 20
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	m := &Mirror{cfg: cfg, opts: opts, ups: map[string]*upstream{}, byNS: map[string]*upstream{},
		failed: map[string]failure{}, lastStale: map[string]time.Time{}}
	for _, uc := range cfg.Upstreams {
		c := opts.Clients[uc.Name]
		if c == nil {
			return nil, fmt.Errorf("mirror: no client for upstream %s", uc.Name)
		}
		u := &upstream{cfg: uc, client: c}
		for _, a := range uc.Allow {
			g, _ := auth.ParseRepoGlob(a) // checked by Validate
			u.allow = append(u.allow, g)
		}
		m.ups[uc.Name] = u
		m.byNS[api.MirrorNamespace(uc.Name)] = u
	}
	return m, nil
}

// Config is the mirror's configuration.
func (m *Mirror) Config() Config { return m.cfg }

// Split tells a mirrored repository (<ns>/<repo>, see api.MirrorRepository)
// from the cluster's own: it returns the upstream's name and the repository
// there.
func (m *Mirror) Split(repo string) (upstream, upstreamRepo string, ok bool) {
	if m == nil {
		return "", "", false
	}
	ns, rest, found := strings.Cut(repo, "/")
	if !found {
		return "", "", false
	}
	u, ok := m.byNS[ns]
	if !ok {
		return "", "", false
	}
	return u.cfg.Name, rest, true
}

// allowed refuses a repository outside the upstream's allow globs.
func (u *upstream) allowed(repo string) error {
	if len(u.allow) == 0 {
		return nil
	}
	segs := strings.Split(repo, "/")
	for _, g := range u.allow {
		if g.Match(segs) {
			return nil
		}
	}
	return oci.Errorf(oci.Denied, "repository %s of upstream %s is not mirrored: it matches none of the upstream's allow globs (%s)",
		repo, u.cfg.Name, strings.Join(u.cfg.Allow, ", "))
}

func (m *Mirror) upstream(name, repo string) (*upstream, error) {
	u, ok := m.ups[name]
	if !ok {
		return nil, oci.Errorf(oci.NameUnknown, "upstream %s is not configured (configured: %s)", name, names(m.cfg.Upstreams))
	}
	return u, u.allowed(repo)
}

// Answer is a mirrored tag as served.
type Answer struct {
	Digest digest.Digest
	// Warning is the Warning header of a stale answer ("" when fresh).
	Warning string
	// Result is hit (fresh from the state), miss (asked upstream) or stale.
	Result string
}

// Tag answers tag of upstream's repo: from the replicated state while the
// record is younger than the upstream's interval (every node answers the
// same digest); otherwise after one revalidation for the whole cluster
// (opts.Revalidate); and with the last known digest and a Warning when the
// upstream cannot be asked. A tag never seen answers the upstream's error.
func (m *Mirror) Tag(ctx context.Context, upstreamName, repo, tag string) (Answer, error) {
	u, err := m.upstream(upstreamName, repo)
	if err != nil {
		return Answer{}, err
	}
	internal := api.MirrorRepository(upstreamName, repo)
	rec, recErr := m.opts.Store.MirrorTag(internal, tag)
	known := recErr == nil
	if known && m.opts.Now().Sub(rec.CheckedAt) < u.cfg.RevalidateEvery() {
		m.opts.Metrics.requests.WithLabelValues(upstreamName, "hit").Inc()
		return Answer{Digest: rec.Digest, Result: "hit"}, nil
	}
	revalidate := m.opts.Revalidate
	if revalidate == nil {
		revalidate = m.Revalidate
	}
	err = revalidate(ctx, upstreamName, repo, tag)
	if err == nil {
		if fresh, ferr := m.opts.Store.MirrorTag(internal, tag); ferr == nil {
			m.opts.Metrics.requests.WithLabelValues(upstreamName, "miss").Inc()
			return Answer{Digest: fresh.Digest, Result: "miss"}, nil
		} else {
			err = ferr
		}
	}
	kind := m.classify(err)
	if known && (errors.Is(kind, ErrUnavailable) || ctx.Err() == nil && !errors.Is(kind, ErrNotFound) && !errors.Is(kind, ErrUnauthorized)) {
		m.opts.Metrics.requests.WithLabelValues(upstreamName, "stale").Inc()
		m.logStale(upstreamName, internal, tag, err)
		return Answer{Digest: rec.Digest, Result: "stale",
			Warning: fmt.Sprintf(`110 - "stale: upstream %s unreachable: %s"`, upstreamName, headerSafe(err.Error()))}, nil
	}
	m.opts.Metrics.requests.WithLabelValues(upstreamName, "error").Inc()
	return Answer{}, m.ociError(upstreamName, repo+":"+tag, kind, err)
}

// Revalidate asks the upstream for tag once (concurrent callers share the
// attempt) and records its answer through Raft: the manifest (fetched and
// stored when the repository does not hold it yet) and the tag with the
// time it was checked. It is what the Raft leader runs for the cluster. A
// failure is remembered for retryFailed.
func (m *Mirror) Revalidate(ctx context.Context, upstreamName, repo, tag string) error {
	u, err := m.upstream(upstreamName, repo)
	if err != nil {
		return err
	}
	key := upstreamName + "/" + repo + ":" + tag
	m.mu.Lock()
	if f, ok := m.failed[key]; ok && m.opts.Now().Before(f.until) {
		m.mu.Unlock()
		return f.err
	}
	m.mu.Unlock()
	ch := m.flights.DoChan(key, func() (any, error) {
		// Detached from the first caller: one client giving up must not
		// fail the others waiting on the same revalidation.
		rctx, cancel := context.WithTimeout(m.opts.Context, resolveTimeout)
		defer cancel()
		err := m.revalidate(rctx, u, repo, tag)
		if err != nil {
			m.mu.Lock()
			if len(m.failed) >= maxFailed {
				clear(m.failed)
			}
			m.failed[key] = failure{until: m.opts.Now().Add(min(retryFailed, u.cfg.RevalidateEvery()/2)), err: err}
			m.mu.Unlock()
		}
		return nil, err
	})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case r := <-ch:
		return r.Err
	}
}

func (m *Mirror) revalidate(ctx context.Context, u *upstream, repo, tag string) error {
	name := u.cfg.Name
	internal := api.MirrorRepository(name, repo)
	// Asked by a node whose state was behind, or just after another
	// revalidation ended: the answer is fresh already.
	if rec, err := m.opts.Store.MirrorTag(internal, tag); err == nil && m.opts.Now().Sub(rec.CheckedAt) < u.cfg.RevalidateEvery() {
		return nil
	}
	m.opts.Metrics.revalidations.WithLabelValues(name).Inc()
	desc, err := u.client.Resolve(ctx, repo, tag)
	m.note(u, "resolve", err)
	if err != nil {
		return fmt.Errorf("resolving %s:%s at upstream %s: %w", repo, tag, name, err)
	}
	if err := m.ensureManifest(ctx, u, repo, internal, desc.Digest); err != nil {
		return err
	}
	rec := consensus.MirrorTag{Upstream: name, Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, CheckedAt: m.opts.Now()}
	if err := m.opts.Store.PutMirrorTag(ctx, internal, tag, rec); err != nil {
		return fmt.Errorf("recording tag %s of %s: %w", tag, internal, err)
	}
	return nil
}

// ensureManifest fetches manifest d of repo from the upstream and stores
// it in the mirrored repository internal, unless it is there already.
func (m *Mirror) ensureManifest(ctx context.Context, u *upstream, repo, internal string, d digest.Digest) error {
	if m.opts.Store.HasManifest(internal, d) {
		return nil
	}
	desc, body, err := u.client.Manifest(ctx, repo, d.String(), m.opts.MaxManifest)
	m.note(u, "manifest", err)
	if err != nil {
		return fmt.Errorf("fetching manifest %s of %s from upstream %s: %w", d, repo, u.cfg.Name, err)
	}
	if got := d.Algorithm().FromBytes(body); got != d {
		return fmt.Errorf("upstream %s sent manifest bytes of digest %s for %s: refused", u.cfg.Name, got, d)
	}
	m.opts.Metrics.bytes.WithLabelValues(u.cfg.Name).Add(float64(len(body)))
	if err := m.opts.Store.StoreManifest(ctx, internal, d, desc.MediaType, body); err != nil {
		return fmt.Errorf("storing manifest %s of %s: %w", d, internal, err)
	}
	return nil
}

// Manifest makes sure manifest d of upstream's repo is in the mirrored
// repository: a by-digest request the state cannot answer (a child of a
// sparse index) fetches it from the upstream once per node at a time.
func (m *Mirror) Manifest(ctx context.Context, upstreamName, repo string, d digest.Digest) error {
	u, err := m.upstream(upstreamName, repo)
	if err != nil {
		return err
	}
	internal := api.MirrorRepository(upstreamName, repo)
	if m.opts.Store.HasManifest(internal, d) {
		m.opts.Metrics.requests.WithLabelValues(upstreamName, "hit").Inc()
		return nil
	}
	ch := m.flights.DoChan("manifest "+internal+"@"+d.String(), func() (any, error) {
		rctx, cancel := context.WithTimeout(m.opts.Context, resolveTimeout)
		defer cancel()
		return nil, m.ensureManifest(rctx, u, repo, internal, d)
	})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			m.opts.Metrics.requests.WithLabelValues(upstreamName, "error").Inc()
			return m.ociError(upstreamName, repo+"@"+d.String(), m.classify(r.Err), r.Err)
		}
	}
	m.opts.Metrics.requests.WithLabelValues(upstreamName, "miss").Inc()
	return nil
}

// FetchPerRegion reports whether one member per region (rather than one
// per cluster) fetches blobs from upstream name (its region-fetch).
func (m *Mirror) FetchPerRegion(name string) bool {
	u, ok := m.ups[name]
	return ok && u.cfg.RegionFetch
}

// Origin returns the function that streams blobs from the upstream name
// (the origin of blobs no peer holds, see fetch.Origins), counting the
// bytes.
func (m *Mirror) Origin(name string) (fetch.OriginFunc, bool) {
	u, ok := m.ups[name]
	if !ok {
		return nil, false
	}
	return func(ctx context.Context, repo string, d digest.Digest, size, offset int64) (io.ReadCloser, error) {
		if err := u.allowed(repo); err != nil {
			return nil, err
		}
		rc, err := u.client.Blob(ctx, repo, d, size, offset)
		m.note(u, "blob", err)
		if err != nil {
			return nil, m.ociError(name, repo+"@"+d.String(), m.classify(err), err)
		}
		return &countingReader{ReadCloser: rc, add: m.opts.Metrics.bytes.WithLabelValues(name).Add}, nil
	}, true
}

type countingReader struct {
	io.ReadCloser
	add func(float64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.add(float64(n))
	return n, err
}

// Kind is how an upstream failed: ErrNotFound, ErrUnauthorized,
// ErrUnavailable, or nil for anything else.
func (m *Mirror) Kind(err error) error { return m.classify(err) }

// classify maps err to ErrNotFound, ErrUnauthorized, ErrUnavailable or nil.
func (m *Mirror) classify(err error) error {
	if m.opts.Classify != nil {
		if k := m.opts.Classify(err); k != nil {
			return k
		}
	}
	for _, k := range []error{ErrNotFound, ErrUnauthorized, ErrUnavailable} {
		if errors.Is(err, k) {
			return k
		}
	}
	var oe *oci.Error
	if errors.As(err, &oe) {
		switch {
		case oe.Code == oci.ManifestUnknown || oe.Code == oci.NameUnknown || oe.Code == oci.BlobUnknown:
			return ErrNotFound
		case oe.Code == oci.Unavailable:
			return ErrUnavailable
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ErrUnavailable
	}
	return nil
}

// ociError is the client's error for a failed mirrored read of what: a
// definite 404 only when the upstream said so; 503 when it cannot be
// asked (or the cluster cannot record its answer), 502 when it refused
// the credentials.
func (m *Mirror) ociError(upstream, what string, kind, err error) error {
	var oe *oci.Error
	if errors.As(err, &oe) && kind == nil {
		return err // the mirror's own refusal (allow globs, unknown upstream)
	}
	msg := headerSafe(err.Error())
	switch {
	case errors.Is(kind, ErrNotFound):
		return oci.Errorf(oci.ManifestUnknown, "%s is not in upstream %s: %s", what, upstream, msg)
	case errors.Is(kind, ErrUnauthorized):
		return oci.Errorf(oci.Unavailable, "upstream %s refused this cluster's credentials for %s: check --upstream-credentials (%s)", upstream, what, msg).
			WithStatus(502)
	case errors.Is(kind, ErrUnavailable):
		return oci.Errorf(oci.Unavailable, "upstream %s is unavailable and the cluster has no copy of %s: %s", upstream, what, msg)
	}
	return oci.Errorf(oci.Unavailable, "%s from upstream %s could not be served: %s", what, upstream, msg)
}

func (m *Mirror) note(u *upstream, op string, err error) {
	now := m.opts.Now()
	u.mu.Lock()
	if err == nil {
		u.lastSuccess = now
	} else {
		u.lastError, u.lastErrorAt = headerSafe(err.Error()), now
	}
	u.mu.Unlock()
	if err != nil {
		m.opts.Metrics.errors.WithLabelValues(u.cfg.Name, op, errorKind(m.classify(err))).Inc()
	}
}

func errorKind(kind error) string {
	switch {
	case errors.Is(kind, ErrNotFound):
		return "not_found"
	case errors.Is(kind, ErrUnauthorized):
		return "unauthorized"
	case errors.Is(kind, ErrUnavailable):
		return "unavailable"
	}
	return "other"
}

func (m *Mirror) logStale(upstream, repo, tag string, err error) {
	now := m.opts.Now()
	m.mu.Lock()
	last := m.lastStale[upstream]
	due := now.Sub(last) >= staleLogEvery
	if due {
		m.lastStale[upstream] = now
	}
	m.mu.Unlock()
	if due {
		m.opts.Log.Warn("serving mirrored tags from the cluster's last known answer: the upstream cannot be asked",
			"upstream", upstream, "repository", repo, "tag", tag, "err", err)
	}
}

// Statuses are the upstreams as /_meshreg/v1/status shows them.
func (m *Mirror) Statuses() []Status {
	var out []Status
	for _, uc := range m.cfg.Upstreams {
		u := m.ups[uc.Name]
		u.mu.Lock()
		out = append(out, Status{Name: uc.Name, URL: uc.URL, Revalidate: uc.RevalidateEvery().String(),
			LastSuccess: u.lastSuccess, LastError: u.lastError, LastErrorAt: u.lastErrorAt})
		u.mu.Unlock()
	}
	return out
}

// headerSafe keeps an upstream's error text fit for a header and a log
// line: printable ASCII, no quotes, bounded.
func headerSafe(s string) string {
	const limit = 300
	b := make([]byte, 0, min(len(s), limit))
	for i := 0; i < len(s) && len(b) < limit; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			c = ' '
		}
		b = append(b, c)
	}
	return string(b)
}
