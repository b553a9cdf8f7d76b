// Package notify sends webhooks (--notifications): each push, mount,
// delete and, if asked, pull that this node accepted, as CNCF
// Distribution's notification envelopes, to the endpoints of a YAML file
// (see config.go), through one queue per endpoint on the node's disk
// (see queue.go) so that events survive a restart. Delivery is in order
// per endpoint and at least once: an event whose delivery was not
// recorded before a crash is sent again with the same id.
//
// Only the node that served a request reports it, so a cluster sends
// each event once; a node lost for good loses what it had not delivered.
package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
)

// Notifier queues events for the endpoints of the file and delivers
// them while Run runs. Notify may be called concurrently, before Run
// too (events wait on disk).
type Notifier struct {
	path, dir  string
	instanceID string
	log        *slog.Logger
	m          *metrics
	watch      *auth.Watched[*Config]

	mu      sync.Mutex // guards what follows
	applied *Config
	eps     map[string]*endpoint
	runCtx  context.Context // nil while Run does not run
	closed  bool
}

var _ api.Notifier = (*Notifier)(nil)

// Open reads the file at path and opens the queues of its endpoints
// under dir (the data dir's notifications/). instanceID names this node
// in events (its peer id).
func Open(path, dir, instanceID string, log *slog.Logger) (*Notifier, error) {
	w, err := Watch(path)
	if err != nil {
		return nil, err
	}
	n := &Notifier{path: path, dir: dir, instanceID: instanceID, log: log, m: newMetrics(), watch: w, eps: map[string]*endpoint{}}
	w.OnReload = func(err error) {
		if err != nil {
			log.Error("notifications file rejected: the last good one stays in effect; fix the file", "file", path, "err", err)
			return
		}
		log.Info("notifications file reloaded", "file", path)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reconcile()
	return n, nil
}

// Watch parses the file at path and watches it for changes (an error
// names the file); Check uses it without opening queues.
func Watch(path string) (*auth.Watched[*Config], error) {
	w, err := auth.Watch(path, func(data []byte) (*Config, error) {
		c, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("notifications %s: %w", path, err)
		}
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("--notifications: %w", err)
	}
	return w, nil
}

// Register adds the notifier's metrics to reg.
func (n *Notifier) Register(reg prometheus.Registerer) {
	reg.MustRegister(n.m.collectors()...)
}

// reconcile applies the file's current endpoints: opens the queues of
// new ones (and starts them when Run runs), updates the others, stops
// and closes the removed ones (their queues stay on disk, delivered if
// they come back). n.mu is held.
func (n *Notifier) reconcile() {
	cfg := n.watch.Get()
	if cfg == n.applied || n.closed {
		return
	}
	n.applied = cfg
	keep := map[string]bool{}
	for _, ec := range cfg.Endpoints {
		keep[ec.Name] = true
		if e, ok := n.eps[ec.Name]; ok {
			e.cfg.Store(ec)
			e.q.setMax(ec.MaxPending)
			continue
		}
		dir := filepath.Join(n.dir, ec.Name)
		q, skipped, dropped, err := openQueue(dir, ec.MaxPending)
		if err != nil {
			n.log.Error("notification endpoint not started: its queue cannot be opened; events for it are not kept", "endpoint", ec.Name, "err", err)
			continue
		}
		e := newEndpoint(ec, q, n.m, n.log)
		if skipped > 0 {
			n.log.Warn("skipped damaged records in a notification queue: those events are lost", "endpoint", ec.Name, "queue", dir, "records", skipped)
		}
		if dropped > 0 {
			e.drop(dropped, dropQueueFull)
		}
		n.eps[ec.Name] = e
		if n.runCtx != nil {
			n.start(e)
		}
		n.log.Info("notification endpoint ready", "endpoint", ec.Name, "url", ec.redactedURL(), "pending", q.len())
	}
	for name, e := range n.eps {
		if keep[name] {
			continue
		}
		n.stop(e)
		e.client.CloseIdleConnections()
		_ = e.q.close()
		delete(n.eps, name)
		n.m.forget(name)
		n.log.Info("notification endpoint removed; its undelivered events stay in its queue until it comes back", "endpoint", name, "queue", e.q.dir)
	}
}

// start runs e's delivery under Run's context, once.
func (n *Notifier) start(e *endpoint) {
	if e.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(n.runCtx)
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		e.run(ctx)
	}()
}

func (n *Notifier) stop(e *endpoint) {
	if e.cancel != nil {
		e.cancel()
		<-e.done
		e.cancel = nil
	}
}

// Run delivers queued events until ctx ends, and applies changes of the
// file within auth.ReloadInterval.
func (n *Notifier) Run(ctx context.Context) error {
	n.mu.Lock()
	n.runCtx = ctx
	n.reconcile()
	for _, e := range n.eps {
		n.start(e)
	}
	n.mu.Unlock()
	t := time.NewTicker(auth.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			n.mu.Lock()
			for _, e := range n.eps {
				n.stop(e)
			}
			n.runCtx = nil
			n.mu.Unlock()
			return nil
		case <-t.C:
			n.mu.Lock()
			n.reconcile()
			n.mu.Unlock()
		}
	}
}

// Close closes the queues; call it after Run returned.
func (n *Notifier) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed = true
	var errs []error
	for _, e := range n.eps {
		n.stop(e)
		e.client.CloseIdleConnections()
		if err := e.q.close(); err != nil {
			errs = append(errs, fmt.Errorf("closing the notification queue %s: %w", e.q.dir, err))
		}
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// Notify queues e for every endpoint that wants it, and returns once it
// is on disk. A failure is logged and counted (dropped, reason error).
func (n *Notifier) Notify(_ context.Context, e api.Event) {
	ev := newEvent(e, "", n.instanceID)
	n.mu.Lock()
	n.reconcile()
	var to []*endpoint
	for _, ep := range n.eps {
		if ep.cfg.Load().wants(ev) {
			to = append(to, ep)
		}
	}
	n.mu.Unlock()
	if len(to) == 0 {
		return // the common case for pulls: nothing more to pay
	}
	ev.ID = newID() // one id for every endpoint, as Distribution
	raw, err := json.Marshal(ev)
	if err != nil { // cannot happen: strings and numbers
		n.log.Error("encoding a notification event", "err", err)
		return
	}
	for _, ep := range to {
		dropped, err := ep.q.push(raw)
		if err != nil {
			ep.drop(1, dropError)
			n.log.Error("notification event lost: it could not be queued (check the data dir's disk)", "endpoint", ep.name, "action", ev.Action,
				"repository", ev.Target.Repository, "digest", ev.Target.Digest, "tag", ev.Target.Tag, "err", err)
			continue
		}
		n.m.pending.WithLabelValues(ep.name).Set(float64(ep.q.len()))
		if dropped > 0 {
			ep.drop(dropped, dropQueueFull)
		}
	}
}

// drop counts events the endpoint will never get.
func (e *endpoint) drop(count int, reason string) {
	e.m.dropped.WithLabelValues(e.name, reason).Add(float64(count))
	e.mu.Lock()
	e.dropped += uint64(count)
	e.mu.Unlock()
	if reason == dropQueueFull {
		e.log.Warn("notification queue full: dropped the oldest events; the receiver is down or too slow (raise maxpending to keep more)",
			"endpoint", e.name, "dropped", count, "maxpending", e.cfg.Load().MaxPending)
	}
}

// Status is the notifications section of the node's status document.
type Status struct {
	File      string           `json:"file"`
	Endpoints []EndpointStatus `json:"endpoints"`
}

// Status reports every endpoint, by name.
func (n *Notifier) Status() Status {
	n.mu.Lock()
	eps := make([]*endpoint, 0, len(n.eps))
	for _, e := range n.eps {
		eps = append(eps, e)
	}
	n.mu.Unlock()
	s := Status{File: n.path, Endpoints: make([]EndpointStatus, 0, len(eps))}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, e.status())
	}
	slices.SortFunc(s.Endpoints, func(a, b EndpointStatus) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return s
}
