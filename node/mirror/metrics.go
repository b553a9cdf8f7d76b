package mirror

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the mirror's counters per upstream; Register exports them.
type Metrics struct {
	requests      *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	revalidations *prometheus.CounterVec
	errors        *prometheus.CounterVec
	responses     *prometheus.CounterVec
}

// NewMetrics returns unregistered metrics.
func NewMetrics() *Metrics {
	return &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_mirror_requests_total",
			Help: "Mirrored manifest and tag requests by upstream and result: hit (answered from the cluster's state), miss (asked the upstream), stale (last known answer served while the upstream failed), error."},
			[]string{"upstream", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_mirror_upstream_bytes_total", Help: "Bytes this node received from each upstream (manifests and blobs)."},
			[]string{"upstream"}),
		revalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_mirror_revalidations_total", Help: "Tag revalidations this node made at each upstream (the Raft leader makes them for the cluster)."},
			[]string{"upstream"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_mirror_upstream_errors_total", Help: "Failed upstream requests by upstream, operation (resolve, manifest, blob) and kind (not_found, unauthorized, unavailable, other)."},
			[]string{"upstream", "op", "kind"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_mirror_upstream_responses_total", Help: "Responses from each upstream by operation (resolve, manifest, blob, stat-blob, token) and HTTP status (0: no response: network error or timeout)."},
			[]string{"upstream", "op", "status"}),
	}
}

// Register exports the metrics.
func (m *Metrics) Register(reg prometheus.Registerer) {
	reg.MustRegister(m.requests, m.bytes, m.revalidations, m.errors, m.responses)
}

// Response counts one response of upstream to op with HTTP status (0: none).
func (m *Metrics) Response(upstream, op string, status int) {
	m.responses.WithLabelValues(upstream, op, strconv.Itoa(status)).Inc()
}
