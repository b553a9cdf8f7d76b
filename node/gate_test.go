package node

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshreg/meshreg/node/replicate"
	"github.com/meshreg/meshreg/p2p"
)

// TestNonMembersReachNoClusterProtocol: a peer outside the cluster is
// refused every cluster protocol and blob (each refusal counted), while
// the join protocol stays open to it.
func TestNonMembersReachNoClusterProtocol(t *testing.T) {
	t.Parallel()
	fn := newFakeNet(t)
	n := fn.add("a", nil)
	blob, d := randomBlob(7, 1<<10)
	hold(t, n, "r/app", blob)
	stranger, err := fn.net.NewTransport()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	refused := n.host.RefusedStreams()
	for _, proto := range []string{replicate.HasProtocol, replicate.ReplicateProtocol, infoProtocol, indexProtocol, forwardProtocol, vouchProtocol, originProtocol} {
		if ans, err := stranger.Request(ctx, n.host.ID(), protocol.ID(proto), []byte(`{}`), maxControlLen); err == nil {
			t.Errorf("%s answered a non-member: %.100q", proto, ans)
		}
	}
	if answer, body, err := stranger.FetchBlob(ctx, n.host.ID(), p2p.BlobRequest{Digest: d}, n.cfg.PeerIdleTimeout); err == nil && answer.Status == p2p.BlobOK {
		body.Close()
		t.Errorf("a non-member was sent a blob")
	}
	if got := n.host.RefusedStreams() - refused; got != 8 {
		t.Errorf("%d refused streams counted, want 8", got)
	}
	if _, err := stranger.Request(ctx, n.host.ID(), memberProtocol, []byte(`{}`), maxControlLen); err != nil {
		t.Errorf("the join protocol is closed to a non-member: %v", err)
	}
}
