package node

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/node/buildinfo"
)

// buildInfoMetric is meshreg_build_info{version,commit,go_version} 1: the
// build a node runs, for dashboards that follow a rolling upgrade.
func buildInfoMetric(b buildinfo.Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "meshreg_build_info",
		Help:        "Always 1; its labels say which build of meshreg this node runs.",
		ConstLabels: prometheus.Labels{"version": b.Version, "commit": b.Commit, "go_version": b.GoVersion},
	})
	g.Set(1)
	return g
}
