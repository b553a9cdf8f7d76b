package api

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/meshreg/meshreg/api/auth/token"
)

// Metrics are the HTTP layer's Prometheus metrics.
type Metrics struct {
	gatherer prometheus.Gatherer
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	bytesIn  prometheus.Counter
	bytesOut prometheus.Counter
	inFlight prometheus.Gauge
	// rateLimited counts requests refused by --rate-limits, by the limit
	// hit: "client" or "repository" (the only two values).
	rateLimited *prometheus.CounterVec
	// tokensIssued counts bearer tokens the token endpoint signed;
	// tokenFailures the bearer tokens refused on /v2/, by reason.
	tokensIssued  prometheus.Counter
	tokenFailures *prometheus.CounterVec
}

// NewMetrics registers the HTTP metrics in reg and serves everything reg
// gathers at /metrics.
func NewMetrics(reg *prometheus.Registry) *Metrics {
	m := &Metrics{
		gatherer: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_http_requests_total",
			Help: "HTTP requests served, by route, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meshreg_http_request_duration_seconds",
			Help:    "Time to serve an HTTP request, by route, method and status.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"route", "method", "status"}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_http_received_bytes_total",
			Help: "Request body bytes received.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_http_sent_bytes_total",
			Help: "Response body bytes sent.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshreg_http_requests_in_flight",
			Help: "HTTP requests being served.",
		}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_rate_limited_total",
			Help: "Requests refused with 429 by --rate-limits, by the limit hit (client or repository).",
		}, []string{"limit"}),
	}
	m.tokensIssued = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meshreg_auth_tokens_issued_total",
		Help: "Bearer tokens issued by this node's token service (/_meshreg/v1/token).",
	})
	m.tokenFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshreg_auth_token_verification_failures_total",
		Help: "Bearer tokens refused on /v2/, by reason (expired, signature, unknown_key, audience, issuer, unknown_user, ...).",
	}, []string{"reason"})
	for _, r := range token.Reasons {
		m.tokenFailures.WithLabelValues(r)
	}
	m.rateLimited.WithLabelValues("client")
	m.rateLimited.WithLabelValues("repository")
	reg.MustRegister(m.requests, m.latency, m.bytesIn, m.bytesOut, m.inFlight, m.rateLimited, m.tokensIssued, m.tokenFailures)
	return m
}

func (m *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.gatherer, promhttp.HandlerOpts{})
}

// serve runs next, counting the request, its latency and its bytes.
func (m *Metrics) serve(route string, w http.ResponseWriter, r *http.Request, next http.HandlerFunc) {
	start := time.Now()
	m.inFlight.Inc()
	defer m.inFlight.Dec()
	cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
	body := &countingBody{ReadCloser: r.Body}
	r.Body = body
	next(cw, r)
	// Every label is bounded: route is one of the router's names, status
	// one the handlers write, and the client's method is mapped to the
	// known few or "other".
	status, method := strconv.Itoa(cw.status), methodLabel(r.Method)
	m.requests.WithLabelValues(route, method, status).Inc()
	m.latency.WithLabelValues(route, method, status).Observe(time.Since(start).Seconds())
	m.bytesIn.Add(float64(body.n))
	m.bytesOut.Add(float64(cw.n))
}

// countingWriter records the status and counts the bytes of a response. It
// keeps io.ReaderFrom, so sendfile still applies, and Unwrap, so
// http.ResponseController reaches the connection.
type countingWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	n           int64
}

func (c *countingWriter) WriteHeader(status int) {
	if !c.wroteHeader {
		c.status, c.wroteHeader = status, true
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.wroteHeader = true
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	c.wroteHeader = true
	n, err := io.Copy(c.ResponseWriter, r)
	c.n += n
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}
