package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the body
// keyed with the endpoint's secret, when it has one.
const SignatureHeader = "X-Meshreg-Signature"

// maxBatch bounds the events of one envelope: a backlog goes out in
// envelopes of up to this many, oldest first.
const maxBatch = 32

// Sign returns the signature header's value for body.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// nextBackoff is the wait after one more failure: base after the first,
// doubled after each next, at most max.
func nextBackoff(prev, base, max time.Duration) time.Duration {
	if prev <= 0 {
		return min(base, max)
	}
	if prev >= max/2 {
		return max
	}
	return min(prev*2, max)
}

// endpoint delivers one queue to one receiver, in order: an envelope
// is sent again until the receiver accepts it (any 2xx), then the next.
// Its run goroutine is owned by the Notifier.
type endpoint struct {
	name   string
	cfg    atomic.Pointer[Endpoint] // swapped when the file is reloaded
	q      *queue
	client *http.Client
	m      *metrics
	log    *slog.Logger

	cancel context.CancelFunc // nil until started
	done   chan struct{}

	mu          sync.Mutex // guards what follows, for Status
	sent        uint64
	dropped     uint64
	failures    map[string]uint64
	inARow      int
	lastSuccess time.Time
	lastError   string
}

func newEndpoint(cfg *Endpoint, q *queue, m *metrics, log *slog.Logger) *endpoint {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	e := &endpoint{
		name: cfg.Name, q: q, m: m, log: log, failures: map[string]uint64{},
		client: &http.Client{
			Transport: tr,
			// A redirect is a failure, not followed: the body and headers
			// (a token, the signature) go only to the configured URL.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	e.cfg.Store(cfg)
	m.pending.WithLabelValues(e.name).Set(float64(q.len()))
	m.sent.WithLabelValues(e.name)
	m.lastSuccess.WithLabelValues(e.name)
	return e
}

// run delivers until ctx ends.
func (e *endpoint) run(ctx context.Context) {
	var wait time.Duration
	for {
		batch := e.q.peek(maxBatch)
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-e.q.wake:
				continue
			}
		}
		cfg := e.cfg.Load()
		status, err := e.post(ctx, cfg, batch)
		if ctx.Err() != nil {
			return // shutting down: what was not acknowledged is sent again after a restart
		}
		if err == nil {
			e.delivered(cfg, batch)
			wait = 0
			continue
		}
		wait = nextBackoff(wait, cfg.Backoff, cfg.MaxBackoff)
		e.failed(cfg, status, err, wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (e *endpoint) delivered(cfg *Endpoint, batch []record) {
	if err := e.q.ack(batch[len(batch)-1].Seq); err != nil {
		e.log.Error("notifications delivered but not recorded as such: they will be sent again after a restart (receivers can drop repeats by event id)",
			"endpoint", e.name, "err", err)
	}
	now := time.Now()
	e.m.sent.WithLabelValues(e.name).Add(float64(len(batch)))
	e.m.lastSuccess.WithLabelValues(e.name).Set(float64(now.UnixNano()) / 1e9)
	e.m.pending.WithLabelValues(e.name).Set(float64(e.q.len()))
	e.mu.Lock()
	recovered := e.inARow >= cfg.Threshold
	e.sent += uint64(len(batch))
	e.inARow, e.lastSuccess = 0, now
	e.mu.Unlock()
	if recovered {
		e.log.Info("notification endpoint accepts events again", "endpoint", e.name, "url", cfg.redactedURL(), "pending", e.q.len())
	}
}

func (e *endpoint) failed(cfg *Endpoint, status string, err error, wait time.Duration) {
	e.m.failures.WithLabelValues(e.name, status).Inc()
	e.mu.Lock()
	e.failures[status]++
	e.inARow++
	n := e.inARow
	e.lastError = err.Error()
	e.mu.Unlock()
	attrs := []any{"endpoint", e.name, "url", cfg.redactedURL(), "err", err, "failures_in_a_row", n, "pending", e.q.len(), "retry_in", wait}
	if n == cfg.Threshold {
		e.log.Warn("notification endpoint keeps failing: events stay queued and are retried with backoff; check the receiver", attrs...)
		return
	}
	e.log.Debug("notification delivery failed; retrying", attrs...)
}

// post sends batch as one envelope. status is the failure's label: the
// HTTP status, or "error" when there was no response.
func (e *endpoint) post(ctx context.Context, cfg *Endpoint, batch []record) (status string, err error) {
	var body bytes.Buffer
	body.WriteString(`{"events":[`)
	for i, rec := range batch {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(rec.Event)
	}
	body.WriteString("]}")
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL, bytes.NewReader(body.Bytes()))
	if err != nil {
		return "error", fmt.Errorf("building the request: %w", err)
	}
	for k, vs := range cfg.Headers {
		req.Header[k] = append([]string(nil), vs...)
	}
	req.Header.Set("Content-Type", EventsMediaType)
	req.Header.Set("User-Agent", "meshreg-notifications")
	if cfg.Secret != "" {
		req.Header.Set(SignatureHeader, Sign([]byte(cfg.Secret), body.Bytes()))
	}
	resp, err := e.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) { // its text has the URL, query (a token?) included
			err = uerr.Err
		}
		return "error", fmt.Errorf("posting %d events: %w", len(batch), err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return "", nil
	}
	status = "other"
	if resp.StatusCode >= 100 && resp.StatusCode < 600 {
		status = strconv.Itoa(resp.StatusCode)
	}
	return status, fmt.Errorf("posting %d events: the receiver answered %s", len(batch), resp.Status)
}

// EndpointStatus is one endpoint in the status document.
type EndpointStatus struct {
	Name    string `json:"name"`
	URL     string `json:"url"` // without user info or query
	Pending int    `json:"pending"`
	Sent    uint64 `json:"sent"`
	Dropped uint64 `json:"dropped"`
	// Failures counts failed deliveries by HTTP status ("error": none).
	Failures map[string]uint64 `json:"failures"`
	// FailuresInARow is how many deliveries failed since the last success.
	FailuresInARow int        `json:"failures_in_a_row"`
	LastSuccess    *time.Time `json:"last_success,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
}

func (e *endpoint) status() EndpointStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := EndpointStatus{Name: e.name, URL: e.cfg.Load().redactedURL(), Pending: e.q.len(), Sent: e.sent, Dropped: e.dropped,
		Failures: make(map[string]uint64, len(e.failures)), FailuresInARow: e.inARow, LastError: e.lastError}
	for k, v := range e.failures {
		s.Failures[k] = v
	}
	if !e.lastSuccess.IsZero() {
		t := e.lastSuccess
		s.LastSuccess = &t
	}
	return s
}
