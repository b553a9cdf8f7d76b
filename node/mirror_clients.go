package node

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/node/mirror"
	"github.com/meshreg/meshreg/node/upstream"
)

// upstreamClients makes a client per configured upstream, sharing the
// credentials file.
func (n *Node) upstreamClients() (map[string]mirror.Upstream, map[string]*upstream.Registry, error) {
	mc := n.cfg.Mirror
	var creds upstream.Credentials
	if mc.CredentialsFile != "" {
		fc, err := upstream.NewFileCredentials(mc.CredentialsFile, n.log.With("component", "upstream-credentials"))
		if err != nil {
			return nil, nil, fmt.Errorf("node: %w", err)
		}
		creds = fc
	}
	clients := map[string]mirror.Upstream{}
	regs := map[string]*upstream.Registry{}
	for _, uc := range mc.Upstreams {
		r, err := upstream.New(upstream.Config{Name: uc.Name, URL: uc.URL, CAFile: uc.CAFile, SkipVerify: uc.SkipVerify,
			Credentials: creds, Logger: n.log.With("component", "upstream"), Observer: upstreamObserver{name: uc.Name, m: n.metrics.mirror}})
		if err != nil {
			return nil, nil, fmt.Errorf("node: --upstream %s: %w", uc.Name, err)
		}
		clients[uc.Name], regs[uc.Name] = r, r
	}
	return clients, regs, nil
}

// classifyUpstream maps node/upstream's errors to the mirror's kinds.
func classifyUpstream(err error) error {
	switch {
	case errors.Is(err, upstream.ErrNotFound):
		return mirror.ErrNotFound
	case errors.Is(err, upstream.ErrUnauthorized):
		return mirror.ErrUnauthorized
	case errors.Is(err, upstream.ErrUnavailable):
		return mirror.ErrUnavailable
	}
	return nil
}

// registerUpstreamGauges exports the rate-limit headroom each upstream
// reported (Docker Hub's ratelimit-remaining; -1 until one is seen).
func (n *Node) registerUpstreamGauges(reg prometheus.Registerer) {
	for name, r := range n.upstreams {
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_mirror_upstream_ratelimit_remaining",
				Help: "Requests left in the upstream's rate-limit window, from its ratelimit-remaining header (-1: never seen).", ConstLabels: prometheus.Labels{"upstream": name}},
				func() float64 { return float64(r.Status().RateRemaining) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_mirror_upstream_ratelimit_limit",
				Help: "The upstream's rate-limit window size, from its ratelimit-limit header (0: never seen).", ConstLabels: prometheus.Labels{"upstream": name}},
				func() float64 { return float64(r.Status().RateLimit) }),
		)
	}
}

// startMirror builds the mirror of the configured upstreams (none: no
// mirror). Open calls it once the node is built, before it serves.
func (n *Node) startMirror() error {
	if len(n.cfg.Mirror.Upstreams) == 0 {
		return nil
	}
	clients, regs, err := n.upstreamClients()
	if err != nil {
		return err
	}
	m, err := n.openMirror(clients, classifyUpstream)
	if err != nil {
		return err
	}
	n.upstreams = regs
	n.useMirror(m)
	return nil
}

// useMirror makes m the node's mirror, and its upstreams the origins of
// blobs of mirrored repositories that no peer holds (fetched by one
// member, see origin.go). Call it before the node serves.
func (n *Node) useMirror(m *mirror.Mirror) {
	n.mirror = m
	n.cfg.Origins = mirrorOrigins{n: n}
}

// upstreamObserver counts an upstream's responses by operation and status
// (the bytes are counted where they are read, by the mirror).
type upstreamObserver struct {
	name string
	m    *mirror.Metrics
}

func (o upstreamObserver) OnResponse(op string, status int) { o.m.Response(o.name, op, status) }
func (o upstreamObserver) OnBytes(string, int64)            {}
