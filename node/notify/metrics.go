package notify

import "github.com/prometheus/client_golang/prometheus"

// metrics are the notifier's, by endpoint name.
type metrics struct {
	pending     *prometheus.GaugeVec
	sent        *prometheus.CounterVec
	failures    *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
}

// Reasons of the dropped metric.
const (
	dropQueueFull = "queue_full" // past maxpending, the oldest went
	dropError     = "error"      // the event could not be queued (disk)
)

func newMetrics() *metrics {
	return &metrics{
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshreg_notifications_pending",
			Help: "Events queued for an endpoint and not delivered yet."}, []string{"endpoint"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshreg_notifications_sent_total",
			Help: "Events an endpoint accepted (2xx)."}, []string{"endpoint"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshreg_notifications_failures_total",
			Help: "Failed deliveries to an endpoint, by HTTP status (error: no response); each is retried."}, []string{"endpoint", "status"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshreg_notifications_dropped_total",
			Help: "Events never delivered to an endpoint: queue_full (the oldest went past maxpending) or error (could not be queued)."}, []string{"endpoint", "reason"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshreg_notifications_last_success_timestamp_seconds",
			Help: "When an endpoint last accepted a delivery (Unix time; 0: not since the node started)."}, []string{"endpoint"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.pending, m.sent, m.failures, m.dropped, m.lastSuccess}
}

// forget removes an endpoint's series (it left the file).
func (m *metrics) forget(name string) {
	l := prometheus.Labels{"endpoint": name}
	m.pending.DeletePartialMatch(l)
	m.sent.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
	m.dropped.DeletePartialMatch(l)
	m.lastSuccess.DeletePartialMatch(l)
}
