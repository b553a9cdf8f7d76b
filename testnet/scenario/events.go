package scenario

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshreg/meshreg/testnet"
)

// stopTimeout is how long a graceful stop may take before Docker kills.
const stopTimeout = 40 * time.Second

// watched are the actions after which the runner measures how long the
// cluster takes to be whole again.
var watched = []string{"heal", "restart", "unpause", "add", "remove", "upgrade"}

// runEvents runs events in order, each at its offset from start (or as
// soon as the previous one is done, if later). An event that fails is
// recorded and the run goes on: the checks judge the cluster, and a
// perturbation that could not be applied is itself a failure.
func (r *run) runEvents(ctx context.Context, start time.Time, events []Event) {
	for _, e := range events {
		sleep(ctx, time.Until(start.Add(e.At.Duration)))
		if ctx.Err() != nil {
			r.rep.fail("event %s at %v: not run: %s", e.Action, e.At.Duration, stopped(ctx))
			return
		}
		began := time.Now()
		targets, err := r.apply(ctx, e)
		er := EventReport{At: began.Sub(r.loadStart).Round(time.Millisecond).String(), Action: e.Action, Targets: targets,
			Took: time.Since(began).Round(time.Millisecond).String()}
		if err != nil {
			er.Error = err.Error()
			r.rep.fail("event %s %s: %v", e.Action, strings.Join(targets, ","), err)
		}
		r.log.Info("event", "action", e.Action, "targets", targets, "took", er.Took, "err", err)
		if err == nil && slices.Contains(watched, e.Action) {
			after := fmt.Sprintf("%s %s at %s", e.Action, strings.Join(targets, ","), er.At)
			r.watchers.Go(func() { r.watchConvergence(ctx, after, began) })
		}
		r.repMu.Lock()
		r.rep.Events = append(r.rep.Events, er)
		if e.Label != "" {
			r.done[e.Label] = time.Now()
		}
		r.repMu.Unlock()
	}
}

// apply carries out one event and returns the names of the nodes it
// touched.
func (r *run) apply(ctx context.Context, e Event) ([]string, error) {
	switch e.Action {
	case "wait":
		return nil, nil
	case "intrude":
		var names []string
		for _, n := range r.cl.running() {
			names = append(names, n.spec.Name)
		}
		return names, r.intrude(ctx)
	case "heal":
		r.heal(ctx)
		return nil, nil
	case "partition":
		var names []string
		for _, t := range e.Nodes {
			n, err := r.cl.resolve(ctx, t)
			if err != nil {
				return names, err
			}
			names = append(names, n.spec.Name)
		}
		r.cl.mu.Lock()
		clear(r.cl.cutOff)
		for _, n := range names {
			r.cl.cutOff[n] = true
		}
		r.cl.mu.Unlock()
		return names, r.applyNetwork(ctx)
	case "add":
		n := r.cl.byName[e.Target]
		if r.cl.stateOf(n) != stateNotStarted {
			return []string{n.spec.Name}, fmt.Errorf("%s was started already", n.spec.Name)
		}
		via := r.cl.randomRunning()
		if via == nil {
			return []string{n.spec.Name}, errors.New("no running node to join")
		}
		if err := r.admit(ctx, n, via); err != nil {
			return []string{n.spec.Name}, err
		}
		if err := r.startContainer(ctx, n, []string{via.c.URL()}); err != nil {
			return []string{n.spec.Name}, err
		}
		if err := r.cl.waitReady(ctx, n, 60*time.Second); err != nil {
			return []string{n.spec.Name}, err
		}
		return []string{n.spec.Name, "via " + via.spec.Name}, r.applyNetwork(ctx)
	case "docker":
		from, err := r.cl.resolve(ctx, e.Target)
		if err != nil {
			return nil, err
		}
		to, err := r.cl.resolve(ctx, e.To)
		if e.To == "any" || e.To == "uncut" {
			// Through another node than the one pushed to, when there is one.
			for range 10 {
				if to != from {
					break
				}
				to, err = r.cl.resolve(ctx, e.To)
			}
		}
		if err != nil {
			return []string{from.spec.Name}, err
		}
		return []string{from.spec.Name, to.spec.Name}, r.dockerStep(ctx, from, to)
	}
	n, err := r.cl.resolve(ctx, e.Target)
	if err != nil {
		return nil, err
	}
	names := []string{n.spec.Name}
	state := r.cl.stateOf(n)
	switch e.Action {
	case "kill":
		if err := n.c.Kill(ctx); err != nil {
			return names, err
		}
		r.cl.setState(n, stateKilled)
	case "stop":
		r.cl.setState(n, stateStopped) // out of the load first
		return names, n.c.Stop(ctx, stopTimeout)
	case "restart":
		if state == stateRunning {
			r.cl.setState(n, stateStopped)
			if err := n.c.Stop(ctx, stopTimeout); err != nil {
				return names, err
			}
		} else if state != stateKilled && state != stateStopped {
			return names, fmt.Errorf("%s is %s: only a running, killed or stopped node can be restarted", n.spec.Name, state)
		}
		if err := n.c.StartAgain(ctx); err != nil {
			return names, err
		}
		if err := r.applyNetwork(ctx); err != nil {
			return names, err
		}
		// Ready means it knows a leader again: a rolling restart must not
		// take the next node down before this one is back.
		err := r.cl.waitReady(ctx, n, 60*time.Second)
		r.cl.setState(n, stateRunning)
		return names, err
	case "pause":
		if err := n.c.Pause(ctx); err != nil {
			return names, err
		}
		r.cl.setState(n, statePaused)
	case "unpause":
		if err := n.c.Unpause(ctx); err != nil {
			return names, err
		}
		r.cl.setState(n, stateRunning)
	case "remove":
		r.cl.setState(n, stateRemoved)
		if logs, err := n.c.Logs(ctx); err == nil {
			n.logs = logs
		}
		return names, n.c.Remove(ctx)
	case "push":
		p, err := r.pushImage(ctx, n, r.s.Workload.Repo, e.Image, e.Layers, int64(e.LayerSize))
		r.hist.push(p, err)
		if err == nil {
			r.hist.mu.Lock()
			r.hist.byImage[e.Image] = p
			r.hist.mu.Unlock()
		}
		return names, err
	case "pull":
		return names, r.measuredPull(ctx, n, e)
	case "upgrade":
		return names, r.upgrade(ctx, n)
	case "flood", "slow-readers", "junk-methods", "oversized":
		return names, r.hostile(ctx, n, e)
	default:
		return names, fmt.Errorf("action %q not implemented", e.Action)
	}
	return names, nil
}

// measuredPull pulls a named image through n and records how many bytes
// every node served to peers meanwhile, for the expectations.
func (r *run) measuredPull(ctx context.Context, n *node, e Event) error {
	r.hist.mu.Lock()
	p, ok := r.hist.byImage[e.Image]
	r.hist.mu.Unlock()
	if !ok {
		return fmt.Errorf("image %q was not acknowledged by its push", e.Image)
	}
	// A node picks its nearest holder only once it knows where its peers
	// are: wait (bounded) until n knows the region of every running peer.
	if !poll(ctx, 30*time.Second, 250*time.Millisecond, func() bool { return r.knowsRegions(ctx, n) }) {
		r.note(fmt.Sprintf("pull %s: %s did not learn every peer's region in 30s; pulled anyway", e.Label, n.spec.Name))
	}
	// The tag may reach n a moment after the push returned.
	poll(ctx, 10*time.Second, 100*time.Millisecond, func() bool {
		_, _, _, err := testnet.NewClient(n.c.URL()).GetManifest(ctx, p.Repo, p.Tag)
		return err == nil
	})
	before := r.servedNow(ctx)
	start := time.Now()
	bytes, err := pullImage(ctx, n, p)
	r.hist.pull(n.spec.Region, time.Since(start), bytes, err)
	if err != nil {
		return err
	}
	after := r.servedNow(ctx)
	delta := map[string]float64{}
	var cross float64
	for name, v := range after {
		delta[name] = v - before[name]
		if r.cl.byName[name].spec.Region != n.spec.Region {
			cross += delta[name]
		}
	}
	r.repMu.Lock()
	r.measure[e.Label] = delta
	r.rep.Measured = append(r.rep.Measured, MeasuredPull{Label: e.Label, Node: n.spec.Name, Bytes: bytes,
		Seconds: time.Since(start).Seconds(), ServedDuring: delta, CrossRegionBytes: int64(cross)})
	r.repMu.Unlock()
	return nil
}

// knowsRegions reports whether n's status lists every other running node
// with its region.
func (r *run) knowsRegions(ctx context.Context, n *node) bool {
	st, err := r.cl.status(ctx, n)
	if err != nil {
		return false
	}
	known := map[string]bool{}
	for _, p := range st.Peers {
		if p.Region != "" {
			known[p.ID] = true
		}
	}
	for _, o := range r.cl.running() {
		if o == n {
			continue
		}
		ost, err := r.cl.status(ctx, o)
		if err != nil || !known[ost.NodeID] {
			return false
		}
	}
	return true
}

// servedNow reads meshreg_peer_bytes_served_total of every running node.
func (r *run) servedNow(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	for _, n := range r.cl.running() {
		if v, err := r.metric(ctx, n, "meshreg_peer_bytes_served_total"); err == nil {
			out[n.spec.Name] = v
		}
	}
	return out
}
