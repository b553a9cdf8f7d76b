package nodefake

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/opencontainers/go-digest"
)

// ProviderBook is a DHT in memory: every record is seen by every member
// at once, and kept until Withdraw.
type ProviderBook struct {
	mu      sync.Mutex
	records map[digest.Digest][]peer.ID
	members []peer.ID
}

// NewProviderBook returns an empty book.
func NewProviderBook() *ProviderBook {
	return &ProviderBook{records: map[digest.Digest][]peer.ID{}}
}

// Routing returns self's view of the book; it implements node.Providers.
func (b *ProviderBook) Routing(self peer.ID) *Routing {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Contains(b.members, self) {
		b.members = append(b.members, self)
	}
	return &Routing{b: b, self: self}
}

// Withdraw drops p's record of d (a holder that lost the blob).
func (b *ProviderBook) Withdraw(d digest.Digest, p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.records[d] = slices.DeleteFunc(b.records[d], func(q peer.ID) bool { return q == p })
}

// Announce records p as a provider of d, as if p had called Provide.
func (b *ProviderBook) Announce(d digest.Digest, p peer.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Contains(b.records[d], p) {
		b.records[d] = append(b.records[d], p)
	}
}

// Routing is one member's view of a ProviderBook.
type Routing struct {
	b    *ProviderBook
	self peer.ID

	mu     sync.Mutex
	closed bool
	peers  map[peer.ID]bool
}

func (r *Routing) Provide(ctx context.Context, d digest.Digest) error {
	if err := r.usable(ctx); err != nil {
		return err
	}
	r.b.Announce(d, r.self)
	return nil
}

func (r *Routing) FindProviders(ctx context.Context, d digest.Digest, limit int) ([]peer.ID, error) {
	if err := r.usable(ctx); err != nil {
		return nil, err
	}
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	found := slices.Clone(r.b.records[d])
	if len(found) > limit {
		found = found[:limit]
	}
	return found, nil
}

func (r *Routing) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("nodefake: routing closed")
	}
	return nil
}

func (r *Routing) AddPeer(p peer.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.peers == nil {
		r.peers = map[peer.ID]bool{}
	}
	r.peers[p] = true
}

// RoutingTableSize counts the other members of the book: every member is
// in every table.
func (r *Routing) RoutingTableSize() int {
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	return len(r.b.members) - 1
}

func (r *Routing) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}
