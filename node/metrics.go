package node

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/node/mirror"
)

// nodeMetrics are the node's counters for the blob paths between peers.
// They live in the Node (no global registry) and are exported by
// RegisterMetrics.
type nodeMetrics struct {
	bytesServed  prometheus.Counter     // blob bytes sent to peers
	bytesFetched prometheus.Counter     // blob bytes received from peers
	reads        *prometheus.CounterVec // blob reads by source: local, peer, failed
	penalties    prometheus.Counter     // peers caught sending wrong bytes
	fetchSeconds prometheus.Histogram
	fetchRate    prometheus.Histogram // bytes per second of whole fetches
	lookup       prometheus.Histogram // DHT provider lookups
	replicated   prometheus.Counter   // copies made for --replicas (push and repair)

	writesRefused *prometheus.CounterVec // writes refused early, by reason (disk)
	corrupt       prometheus.Counter     // stored blobs found corrupt and quarantined
	corruptCount  atomic.Int64           // the same, for the status document
	scrubbed      prometheus.Counter     // bytes re-hashed by the scrub
	mirror        *mirror.Metrics        // per upstream (mirror.go)

	originBlobs     prometheus.Counter // blobs fetched from origins (upstreams) by this node
	originBytes     prometheus.Counter // bytes received from origins
	originDelegated prometheus.Counter // origin fetches another member made for this node
	originFallbacks prometheus.Counter // origin fetches made here after the chosen member failed

	catchUps     *prometheus.CounterVec // reads that missed and caught up with the leader, by result
	indexQueries prometheus.Counter     // read index queries (coalesced) made for them
}

func newNodeMetrics() *nodeMetrics {
	m := &nodeMetrics{
		bytesServed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_peer_bytes_served_total", Help: "Blob bytes this node sent to other nodes."}),
		bytesFetched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_peer_bytes_fetched_total", Help: "Blob bytes this node received from other nodes."}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_blob_reads_total",
			Help: "Blob reads for clients by where the bytes came from: local (this node's disk), peer (fetched from another node), failed (no node could serve it)."},
			[]string{"source"}),
		penalties: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_peer_penalties_total", Help: "Times a peer was penalised for sending bytes that did not match the digest."}),
		fetchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshreg_peer_fetch_duration_seconds", Help: "Time to fetch a whole blob from peers.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}),
		fetchRate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshreg_peer_fetch_throughput_bytes_per_second", Help: "Throughput of whole blob fetches from peers.",
			Buckets: prometheus.ExponentialBuckets(1<<20, 2, 12)}),
		lookup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "meshreg_dht_provider_lookup_duration_seconds", Help: "Time to find the providers of a blob in the DHT.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		replicated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_blob_copies_made_total", Help: "Blob copies this node asked other nodes to make, to keep --replicas copies."}),
		writesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_writes_refused_total", Help: "Writes (blob uploads, manifest PUTs, forwarded writes) this node refused, by reason: disk (free space below --min-free-disk, or the disk full), budget (over --max-disk with nothing to evict)."},
			[]string{"reason"}),
		corrupt: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_blobs_corrupt_total", Help: "Blobs on this node's disk found not to match their digest (when served or scrubbed); each was quarantined and fetched again from peers."}),
		scrubbed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_scrub_bytes_total", Help: "Bytes of stored blobs re-hashed by the background scrub."}),
		mirror: mirror.NewMetrics(),
		originBlobs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_origin_blobs_fetched_total", Help: "Blobs this node fetched from their origin (an upstream registry) for the cluster."}),
		originBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_origin_bytes_fetched_total", Help: "Blob bytes this node received from origins (upstream registries)."}),
		originDelegated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_origin_fetches_delegated_total", Help: "Blob fetches from an origin that this node asked the member chosen for the blob to make, streaming from it."}),
		originFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_origin_fetch_fallbacks_total", Help: "Blob fetches from an origin this node made itself because the member chosen for the blob could not be asked, refused or failed."}),
		catchUps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshreg_read_catchups_total",
			Help: "Reads that found nothing locally and waited for the leader's read index before answering, by result: caught_up (then answered from local state, 404 if still absent), unavailable (no leader answered in time: 503)."},
			[]string{"result"}),
		indexQueries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshreg_read_index_queries_total", Help: "Queries for the leader's read index made for reads that missed (concurrent misses share one)."}),
	}
	m.writesRefused.WithLabelValues("disk")
	m.writesRefused.WithLabelValues("budget")
	for _, result := range []string{"caught_up", "unavailable"} {
		m.catchUps.WithLabelValues(result)
	}
	for _, source := range []string{"local", "peer", "failed"} {
		m.reads.WithLabelValues(source) // exported from the start, at 0
	}
	return m
}

func (m *nodeMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.bytesServed, m.bytesFetched, m.reads, m.penalties, m.fetchSeconds, m.fetchRate, m.lookup, m.replicated,
		m.writesRefused, m.corrupt, m.scrubbed, m.originBlobs, m.originBytes, m.originDelegated, m.originFallbacks,
		m.catchUps, m.indexQueries}
}

// registerMirror exports the mirror's metrics, with the rate-limit headroom
// of each upstream that reports one.
func (n *Node) registerMirror(reg prometheus.Registerer) {
	if n.mirror == nil {
		return
	}
	n.metrics.mirror.Register(reg)
	n.registerUpstreamGauges(reg)
}

// RegisterMetrics adds the node's storage gauges to reg.
func (n *Node) RegisterMetrics(reg prometheus.Registerer) {
	if n.notify != nil {
		n.notify.Register(reg)
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_blobs_stored", Help: "Blobs held on this node's disk."},
			func() float64 { c, _ := n.blobs.Stats(); return float64(c) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_blob_bytes_stored", Help: "Bytes of blobs held on this node's disk."},
			func() float64 { _, b := n.blobs.Stats(); return float64(b) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_raft_applied_index", Help: "Last Raft log index applied to the metadata store."},
			func() float64 { return float64(n.meta.Status().AppliedIndex) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_dht_routing_table_peers", Help: "Peers in this node's DHT routing table."},
			func() float64 { return float64(n.routing.RoutingTableSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_blobs_under_replicated", Help: "Blobs held here with fewer live copies than min(replicas, live nodes) at the last repair sweep (-1: none yet)."},
			func() float64 { return float64(n.underReplicated.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_disk_free_bytes", Help: "Free bytes on the filesystem of the data dir (read at most once a second)."},
			func() float64 { f, _, _ := n.disk.read(false); return float64(f) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_disk_reserve_bytes", Help: "Free bytes kept on the data dir's filesystem (--min-free-disk): below it writes are refused with 507."},
			func() float64 { return float64(n.cfg.MinFreeDisk) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_upload_sessions_open", Help: "Upload sessions open on this node (at most --max-uploads; starts past it get 429)."},
			func() float64 { return float64(n.blobs.OpenUploads()) }),
	)
	reg.MustRegister(n.metrics.collectors()...)
	reg.MustRegister(n.gc.collectors()...)
	reg.MustRegister(newUsageCollector(n))
	reg.MustRegister(n.evictMetrics.evictions, n.evictMetrics.bytes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_disk_budget_bytes", Help: "Most bytes of blobs this node keeps (--max-disk; 0: no budget)."},
			func() float64 { return float64(n.cfg.MaxDisk) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meshreg_disk_used_bytes", Help: "Bytes of blobs on this node's disk, as counted against --max-disk."},
			func() float64 { _, b := n.blobs.Stats(); return float64(b) }))
	reg.MustRegister(buildInfoMetric(n.cfg.Build))
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshreg_p2p_streams_refused_total",
		Help: "Inbound libp2p streams reset unread because the peer may not use the protocol (not a member)."},
		func() float64 { return float64(n.host.RefusedStreams()) }))
	n.registerMirror(reg)
}
