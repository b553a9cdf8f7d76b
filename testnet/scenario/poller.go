package scenario

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/meshreg/meshreg/testnet"
)

// observer is what the poller saw: terms and leaders (elections), and
// every node's peer counters, summed over its restarts (a counter starts
// again at 0 in a new process).
type observer struct {
	mu        sync.Mutex
	termStart uint64
	maxTerm   uint64
	termUps   int
	leader    string
	leaderChg int
	counters  map[string]*counter // "node metric" → counter
}

type counter struct{ base, last float64 }

func (c *counter) observe(v float64) {
	if v < c.last { // the process restarted
		c.base += c.last
	}
	c.last = v
}

func (c *counter) total() float64 { return c.base + c.last }

// peerMetrics are the counters the report shows per node.
var peerMetrics = []string{"meshreg_peer_bytes_served_total", "meshreg_peer_bytes_fetched_total"}

// startPoller polls every running node's status every 500 ms and its
// metrics every 2 s until the returned stop is called.
func (r *run) startPoller(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	r.obs = &observer{counters: map[string]*counter{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			r.pollOnce(ctx, i%4 == 0)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
		r.pollOnce(context.Background(), true) // the final counters
	}
}

func (r *run) pollOnce(ctx context.Context, metrics bool) {
	for _, n := range r.cl.running() {
		st, err := r.cl.status(ctx, n)
		if err == nil {
			r.obs.mu.Lock()
			if r.obs.termStart == 0 {
				r.obs.termStart = st.Raft.Term
			}
			if st.Raft.Term > r.obs.maxTerm {
				if r.obs.maxTerm != 0 {
					r.obs.termUps++
				}
				r.obs.maxTerm = st.Raft.Term
			}
			if st.Raft.State == "Leader" && st.Raft.LeaderID != r.obs.leader {
				if r.obs.leader != "" {
					r.obs.leaderChg++
				}
				r.obs.leader = st.Raft.LeaderID
			}
			r.obs.mu.Unlock()
		}
		if !metrics {
			continue
		}
		for _, m := range peerMetrics {
			v, err := r.metric(ctx, n, m)
			if err != nil {
				continue
			}
			r.obs.mu.Lock()
			c := r.obs.counters[n.spec.Name+" "+m]
			if c == nil {
				c = &counter{}
				r.obs.counters[n.spec.Name+" "+m] = c
			}
			c.observe(v)
			r.obs.mu.Unlock()
		}
	}
}

// metric reads the sum of every sample of the named metric from n's
// /metrics (the Prometheus text format).
func (r *run) metric(ctx context.Context, n *node, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.c.URL()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := r.cl.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return testnet.SumMetric(resp.Body, name)
}
