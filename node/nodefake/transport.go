package nodefake

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"

	cstate "github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/p2p"
)

// Network joins Transports in memory, as libp2p joins hosts: a request
// goes straight to the handler the receiving transport registered, after
// its authorizer said yes, unless the two are cut apart.
type Network struct {
	mu     sync.Mutex
	hosts  map[peer.ID]*Transport
	cut    map[[2]peer.ID]bool
	nextIP atomic.Uint32
}

// NewNetwork returns an empty network.
func NewNetwork() *Network {
	return &Network{hosts: map[peer.ID]*Transport{}, cut: map[[2]peer.ID]bool{}}
}

// ErrUnreachable is the error of a request to a peer that is not on the
// network, closed, or cut off.
var ErrUnreachable = errors.New("nodefake: peer unreachable")

// NewTransport adds a peer with a fresh identity to the network.
func (n *Network) NewTransport() (*Transport, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	ip := n.nextIP.Add(1)
	addr, err := ma.NewMultiaddr(fmt.Sprintf("/ip4/10.%d.%d.%d/tcp/4001/p2p/%s", ip>>16&255, ip>>8&255, ip&255, id))
	if err != nil {
		return nil, err
	}
	t := &Transport{net: n, id: id, key: key, addr: addr, handlers: map[protocol.ID]p2p.HandlerFunc{},
		connected: map[peer.ID]bool{}, known: map[peer.ID]bool{}}
	n.mu.Lock()
	n.hosts[id] = t
	n.mu.Unlock()
	return t, nil
}

// Cut breaks every link between a and b (both ways); Heal mends them.
func (n *Network) Cut(a, b peer.ID) { n.setCut(a, b, true) }

// Heal undoes Cut.
func (n *Network) Heal(a, b peer.ID) { n.setCut(a, b, false) }

func (n *Network) setCut(a, b peer.ID, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cut[[2]peer.ID{a, b}], n.cut[[2]peer.ID{b, a}] = cut, cut
}

// reach returns to's transport if from can reach it now.
func (n *Network) reach(from, to peer.ID) (*Transport, error) {
	n.mu.Lock()
	t := n.hosts[to]
	cut := n.cut[[2]peer.ID{from, to}]
	n.mu.Unlock()
	if t == nil || cut || t.closed.Load() {
		return nil, fmt.Errorf("%w: %s", ErrUnreachable, to)
	}
	return t, nil
}

// Transport is one peer of a Network; it implements node.Transport.
type Transport struct {
	net  *Network
	id   peer.ID
	key  crypto.PrivKey
	addr ma.Multiaddr

	closed  atomic.Bool
	refused atomic.Int64
	agent   atomic.Pointer[string] // nil: this release (see SetAgent)

	mu        sync.Mutex
	handlers  map[protocol.ID]p2p.HandlerFunc
	blobs     p2p.BlobServer
	authorize p2p.Authorizer
	connected map[peer.ID]bool
	known     map[peer.ID]bool
}

func (t *Transport) ID() peer.ID                { return t.id }
func (t *Transport) Addrs() []ma.Multiaddr      { return []ma.Multiaddr{t.addr} }
func (t *Transport) RaftAddress() string        { return t.addr.String() }
func (t *Transport) PrivateKey() crypto.PrivKey { return t.key }
func (t *Transport) RefusedStreams() int64      { return t.refused.Load() }

// SetAgent makes the peer say it runs agent (a user agent as libp2p's
// identify carries it: "meshreg/v1.0.0 ops/5"), as an older release would.
func (t *Transport) SetAgent(agent string) { t.agent.Store(&agent) }

// AgentVersion is what peer p says it runs: this release, unless SetAgent
// said otherwise; "" for a peer not on the network.
func (t *Transport) AgentVersion(p peer.ID) string {
	t.net.mu.Lock()
	o := t.net.hosts[p]
	t.net.mu.Unlock()
	if o == nil {
		return ""
	}
	if a := o.agent.Load(); a != nil {
		return *a
	}
	return fmt.Sprintf("meshreg/fake ops/%d", cstate.LastOp)
}

func (t *Transport) HandleRequests(proto protocol.ID, _ int, _ time.Duration, fn p2p.HandlerFunc) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.handlers[proto] = fn
}

func (t *Transport) ServeBlobs(_ time.Duration, fn p2p.BlobServer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.blobs = fn
}

func (t *Transport) SetAuthorizer(fn p2p.Authorizer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.authorize = fn
}

// accept reports whether t lets from open proto, counting refusals.
func (t *Transport) accept(from peer.ID, proto protocol.ID) bool {
	t.mu.Lock()
	allow := t.authorize
	t.mu.Unlock()
	if allow != nil && !allow(from, proto) {
		t.refused.Add(1)
		return false
	}
	return true
}

// Request calls to's handler for proto, as if over a stream: the handler
// runs on its own goroutine and the caller stops waiting when ctx ends.
func (t *Transport) Request(ctx context.Context, to peer.ID, proto protocol.ID, req []byte, maxLen int) ([]byte, error) {
	if t.closed.Load() {
		return nil, fmt.Errorf("nodefake: request from a closed transport: %w", ErrUnreachable)
	}
	dst, err := t.net.reach(t.id, to)
	if err != nil {
		return nil, err
	}
	dst.mu.Lock()
	fn := dst.handlers[proto]
	dst.mu.Unlock()
	if fn == nil {
		return nil, fmt.Errorf("nodefake: %s does not speak %s", to, proto)
	}
	if !dst.accept(t.id, proto) {
		return nil, fmt.Errorf("nodefake: %s refused %s: stream reset", to, proto)
	}
	t.note(to)
	dst.note(t.id)
	answer := make(chan []byte, 1)
	go func() { answer <- fn(ctx, t.id, append([]byte(nil), req...)) }()
	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("nodefake: request %s to %s: %w", proto, to, ctx.Err())
	case b := <-answer:
		if b == nil {
			return nil, fmt.Errorf("nodefake: request %s to %s: no answer (stream closed)", proto, to)
		}
		if len(b) > maxLen {
			return nil, fmt.Errorf("nodefake: answer of %d bytes over %d", len(b), maxLen)
		}
		return b, nil
	}
}

// FetchBlob asks from's blob server; the body fails once it moves no
// bytes for idle, or when ctx ends, as a libp2p stream is reset.
func (t *Transport) FetchBlob(ctx context.Context, from peer.ID, req p2p.BlobRequest, idle time.Duration) (p2p.BlobAnswer, io.ReadCloser, error) {
	src, err := t.net.reach(t.id, from)
	if err != nil {
		return p2p.BlobAnswer{}, nil, err
	}
	src.mu.Lock()
	fn := src.blobs
	src.mu.Unlock()
	if fn == nil || !src.accept(t.id, p2p.BlobProtocol) {
		return p2p.BlobAnswer{}, nil, fmt.Errorf("nodefake: %s refused the blob protocol: stream reset", from)
	}
	t.note(from)
	src.note(t.id)
	answer, body := fn(ctx, t.id, req)
	if answer.Status != p2p.BlobOK || body == nil {
		if body != nil {
			body.Close()
		}
		return answer, nil, nil
	}
	return answer, watchIdle(ctx, body, idle), nil
}

// ErrIdle is the error of a blob body that moved no bytes for its idle
// timeout.
var ErrIdle = errors.New("nodefake: blob transfer idle")

// watchIdle copies body through a pipe that fails when no bytes move for
// idle or ctx ends.
func watchIdle(ctx context.Context, body io.ReadCloser, idle time.Duration) io.ReadCloser {
	body = &closeOnce{ReadCloser: body}
	pr, pw := io.Pipe()
	moved := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, err := body.Read(buf)
			if n > 0 {
				select {
				case moved <- struct{}{}:
				default:
				}
				if _, werr := pw.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				pw.CloseWithError(err)
				return
			}
		}
	}()
	go func() {
		timer := time.NewTimer(idle)
		defer timer.Stop()
		defer body.Close()
		for {
			select {
			case <-done:
				return
			case <-moved:
				timer.Reset(idle)
			case <-timer.C:
				pw.CloseWithError(ErrIdle)
				return
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			}
		}
	}()
	return &idleBody{PipeReader: pr, body: body}
}

// closeOnce closes a served body once, as a stream ends once: the server's
// Close releases what it holds for the transfer.
type closeOnce struct {
	io.ReadCloser
	once sync.Once
	err  error
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { c.err = c.ReadCloser.Close() })
	return c.err
}

// idleBody stops the transfer when the reader is closed early.
type idleBody struct {
	*io.PipeReader
	body io.Closer
}

func (b *idleBody) Close() error {
	_ = b.body.Close()
	return b.PipeReader.Close()
}

// note records a connection to p.
func (t *Transport) note(p peer.ID) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.connected[p] = true
}

// Connect connects to a multiaddr ending in /p2p/<id>.
func (t *Transport) Connect(ctx context.Context, addr string) error {
	m, err := ma.NewMultiaddr(addr)
	if err != nil {
		return fmt.Errorf("nodefake: connect %q: %w", addr, err)
	}
	info, err := peer.AddrInfoFromP2pAddr(m)
	if err != nil {
		return fmt.Errorf("nodefake: connect %q: %w", addr, err)
	}
	t.RememberPeer(*info)
	return t.Dial(ctx, info.ID)
}

func (t *Transport) Dial(ctx context.Context, p peer.ID) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dst, err := t.net.reach(t.id, p)
	if err != nil {
		return err
	}
	t.note(p)
	dst.note(t.id)
	return nil
}

// Connected reports a connection made by Dial, Connect or an exchange,
// while the peer stays reachable.
func (t *Transport) Connected(p peer.ID) bool {
	t.mu.Lock()
	c := t.connected[p]
	t.mu.Unlock()
	if !c {
		return false
	}
	_, err := t.net.reach(t.id, p)
	return err == nil
}

func (t *Transport) RememberPeer(info peer.AddrInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.known[info.ID] = true
}

// Close takes the peer off the network: requests to it fail from now on.
func (t *Transport) Close() error {
	t.closed.Store(true)
	return nil
}
