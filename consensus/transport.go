package consensus

import "github.com/hashicorp/raft"

// raftTransport is the transport Open gives raft: cfg.Transport without
// pipelining, or an in-memory one addressed by the node id.
func raftTransport(cfg Config) raft.Transport {
	if cfg.Transport == nil {
		_, t := raft.NewInmemTransport(raft.ServerAddress(cfg.NodeID))
		return t
	}
	return withoutPipeline(cfg.Transport)
}

// withoutPipeline turns off pipelined replication on a network transport;
// Open applies it to Config.Transport. Other transports are returned as
// they are.
//
// Why: hashicorp/raft's pipeline can deadlock (hashicorp/raft#612; Grafana
// Pyroscope turned it off the same way, grafana/pyroscope#5518). With the
// default MaxRPCsInFlight both pipeline channels are unbuffered; when a
// follower answers an AppendEntries with Success=false, raft's
// pipelineDecode returns while the pipeline's decoder holds the next
// response, and the send loop may still pick a ready trigger over the
// closed finish channel: that send parks forever on the pipeline, whose
// Close is deferred behind it. The follower then gets heartbeats but no
// entries (so no election heals it) and the leader's Shutdown hangs.
// Followers refuse appends in routine events (a log mismatch after a
// rejoin or restart, a failed disk write), so this is not rare.
// TestReplicationSurvivesRejectedAppends reproduces it.
//
// The cost: one AppendEntries in flight per follower instead of two; each
// still batches every entry waiting (up to MaxAppendEntries). On loopback
// BenchmarkTCPWrites showed no difference beyond noise.
func withoutPipeline(t raft.Transport) raft.Transport {
	if nt, ok := t.(*raft.NetworkTransport); ok {
		return unpipelined{nt}
	}
	return t
}

// unpipelined is a NetworkTransport without AppendEntriesPipeline. It
// embeds the concrete type, not the raft.Transport interface, so that
// every optional interface raft looks for by type assertion is still there
// (WithClose, so Shutdown closes it; WithPreVote, so elections pre-vote;
// any a later raft release adds): wrapping the interface would drop them
// without a word.
type unpipelined struct{ *raft.NetworkTransport }

// The optional interfaces raft asserts on the transport, kept on purpose.
var (
	_ raft.Transport   = unpipelined{}
	_ raft.WithClose   = unpipelined{}
	_ raft.WithPreVote = unpipelined{}
)

// AppendEntriesPipeline reports that pipelining is not supported, which
// raft takes as the cue to replicate with one AppendEntries at a time.
func (unpipelined) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}
