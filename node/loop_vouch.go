package node

import (
	"context"
	"log/slog"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// vouchEvery is how often one unknown peer may make this node ask its
// members about it.
const vouchEvery = 5 * time.Second

// voucher lets a member whose configuration is out of date hear from a
// leader it does not know yet. A node that was down while the membership
// changed restarts with the old configuration; if a new member leads now,
// its AppendEntries would be refused forever. So when a peer outside the
// configuration opens a Raft stream (the gate reports it on unknown), this
// node asks the members it knows whether that peer is one of theirs
// (Node.vouched), and admits it if one says so. Only members are believed,
// and each peer is asked about at most once per vouchEvery, so a stranger
// opening Raft streams costs a few small requests, and gains nothing.
type voucher struct {
	unknown <-chan peer.ID
	// vouched asks members about p: which one vouched for it, if any.
	vouched func(ctx context.Context, p peer.ID) (by peer.ID, ok bool)
	// admit lets p open the cluster protocols for a while.
	admit func(p peer.ID)
	log   *slog.Logger
}

func newVoucher(unknown <-chan peer.ID, vouched func(context.Context, peer.ID) (peer.ID, bool), admit func(peer.ID), log *slog.Logger) *voucher {
	return &voucher{unknown: unknown, vouched: vouched, admit: admit, log: log}
}

func (v *voucher) Run(ctx context.Context) error {
	asked := map[peer.ID]time.Time{}
	for {
		var p peer.ID
		select {
		case <-ctx.Done():
			return nil
		case p = <-v.unknown:
		}
		now := time.Now()
		if now.Sub(asked[p]) < vouchEvery {
			continue
		}
		if len(asked) >= maxAdmitted {
			for q, at := range asked {
				if now.Sub(at) >= vouchEvery {
					delete(asked, q)
				}
			}
			if len(asked) >= maxAdmitted {
				continue
			}
		}
		asked[p] = now
		if by, ok := v.vouched(ctx, p); ok {
			v.admit(p)
			v.log.Info("admitted a Raft peer this node's configuration does not name yet: a member vouched for it",
				"peer", p.String(), "vouched_by", by.String())
		}
	}
}
