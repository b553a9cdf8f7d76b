package testnet

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/p2p"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// InProcessNode is a real node (badger, Raft over libp2p, HTTP API) running
// inside the test process, so that the harness can cut its libp2p links
// with a connection gater: what a partition between hosts looks like to
// meshreg.
type InProcessNode struct {
	*Node // Host, URL and Status work as for a process; Kill/Stop do not
	N     *node.Node
	srv   *httptest.Server
	stop  context.CancelFunc
	done  sync.WaitGroup

	stopOnce sync.Once
}

// StartInProcessCluster starts size in-process nodes on loopback: the first
// bootstraps, the others join it (with a join token from the first, unless
// they have a cluster key). tweak, if set, edits node i's config. It
// returns once they agree on a leader and have ExpectedVoters(size, voters)
// voters (--voters, 3 unless tweak changes it); the nodes close when the
// test ends.
func StartInProcessCluster(t testing.TB, size int, tweak func(i int, c *node.Config)) []*InProcessNode {
	t.Helper()
	return startInProcessCluster(t, size, tweak, nil, nil)
}

// StartInProcessClusterWith is StartInProcessCluster with node i built
// with the test options opts(i) (nil: none), such as node.WithServeFault to
// play a bad peer.
func StartInProcessClusterWith(t testing.TB, size int, tweak func(i int, c *node.Config), opts func(i int) []node.Option) []*InProcessNode {
	t.Helper()
	return startInProcessCluster(t, size, tweak, nil, opts)
}

// startInProcessCluster is StartInProcessClusterWith with node i logging
// to logs(i) (to t.Log at WARN when logs is nil).
func startInProcessCluster(t testing.TB, size int, tweak func(i int, c *node.Config), logs func(i int) *slog.Logger, opts func(i int) []node.Option) []*InProcessNode {
	t.Helper()
	var nodes []*InProcessNode
	voters := 0
	for i := range size {
		cfg := node.DefaultConfig()
		cfg.DataDir = KeepDir(t, "inproc")
		cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.P2P.Gater = p2p.NewPartitionGater()
		cfg.StabilizationTime = HarnessStabilization
		if i > 0 {
			cfg.Join = []string{nodes[0].URL()}
		}
		if tweak != nil {
			tweak(i, &cfg)
		}
		if i > 0 && cfg.P2P.PrivateNetworkKey == nil && cfg.JoinToken == "" {
			tok, _, err := nodes[0].N.CreateJoinToken(time.Hour)
			if err != nil {
				t.Fatalf("testnet: join token from the first node: %v", err)
			}
			cfg.JoinToken = tok
		}
		voters = cfg.Voters
		var log *slog.Logger
		if logs != nil {
			log = logs(i)
		}
		var o []node.Option
		if opts != nil {
			o = opts(i)
		}
		nodes = append(nodes, startInProcessLogged(t, cfg, nil, log, o...))
	}
	plain := make([]*Node, len(nodes))
	for i, n := range nodes {
		plain[i] = n.Node
	}
	WaitConverged(t, plain, size, ExpectedVoters(size, voters), 60*time.Second)
	return nodes
}

// StartInProcessTogether starts size in-process nodes at the same moment,
// each told about every node (--join with all their URLs) and to expect
// size nodes before bootstrapping (--bootstrap-expect), as a DaemonSet
// rollout with a headless Service does. It returns once they form one
// cluster: every node sees the same leader and size voters.
func StartInProcessTogether(t testing.TB, size int) []*InProcessNode {
	t.Helper()
	var lns []net.Listener
	var urls []string
	for range size {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		urls = append(urls, "http://"+ln.Addr().String())
	}
	// --bootstrap-expect needs the cluster key.
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	var nodes []*InProcessNode
	plain := make([]*Node, size)
	for i := range size {
		cfg := node.DefaultConfig()
		cfg.P2P.PrivateNetworkKey = key
		cfg.DataDir = KeepDir(t, "inproc")
		cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.P2P.Gater = p2p.NewPartitionGater()
		cfg.Join = urls
		cfg.BootstrapExpect = size
		nodes = append(nodes, startInProcess(t, cfg, lns[i]))
		plain[i] = nodes[i].Node
	}
	WaitConverged(t, plain, size, size, 60*time.Second)
	return nodes
}

// StartInProcessNode starts one in-process node with cfg (its data dir,
// libp2p listen address and gater are filled in when empty).
func StartInProcessNode(t testing.TB, cfg node.Config) *InProcessNode {
	t.Helper()
	if cfg.DataDir == "" || cfg.DataDir == node.DefaultConfig().DataDir {
		cfg.DataDir = KeepDir(t, "inproc")
	}
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	if cfg.P2P.Gater == nil {
		cfg.P2P.Gater = p2p.NewPartitionGater()
	}
	return startInProcess(t, cfg, nil)
}

// startInProcess opens a node and serves its API on ln (a new loopback
// listener if nil).
func startInProcess(t testing.TB, cfg node.Config, ln net.Listener) *InProcessNode {
	t.Helper()
	return startInProcessLogged(t, cfg, ln, nil)
}

// startInProcessLogged is startInProcess with the node logging to log (to
// t.Log at WARN when nil).
func startInProcessLogged(t testing.TB, cfg node.Config, ln net.Listener, log *slog.Logger, opts ...node.Option) *InProcessNode {
	t.Helper()
	if log == nil {
		log = tlog.Logger(t, slog.LevelWarn)
	}
	n, err := node.Open(cfg, log, opts...)
	if err != nil {
		t.Fatalf("testnet: in-process node: %v", err)
	}
	reg := prometheus.NewRegistry()
	n.RegisterMetrics(reg)
	h, err := api.New(api.DefaultConfig(), n, n, api.NewMetrics(reg), log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	ctx, cancel := context.WithCancel(context.Background())
	ip := &InProcessNode{Node: &Node{t: t, host: strings.TrimPrefix(srv.URL, "http://"), external: true}, N: n, srv: srv, stop: cancel}
	ip.done.Add(1)
	go func() { defer ip.done.Done(); _ = n.Run(ctx) }()
	t.Cleanup(ip.Stop)
	return ip
}

// Stop stops the node for good: its API, its loops, its stores and its
// libp2p host, as a host that went away would. Calling it again does
// nothing.
func (n *InProcessNode) Stop() {
	n.stopOnce.Do(func() {
		n.srv.Close()
		n.stop()
		n.done.Wait()
		if err := n.N.Close(); err != nil {
			n.t.Logf("testnet: closing in-process node: %v", err)
		}
	})
}

// PeerID is the node's libp2p peer id.
func (n *InProcessNode) PeerID() peer.ID { return n.N.Host().ID() }

// Partition cuts every libp2p link between the nodes of a and those of b,
// both ways; Heal restores them.
func Partition(t testing.TB, a, b []*InProcessNode) { t.Helper(); cut(t, a, b, true) }

// Heal undoes Partition.
func Heal(t testing.TB, a, b []*InProcessNode) { t.Helper(); cut(t, a, b, false) }

func cut(t testing.TB, a, b []*InProcessNode, block bool) {
	t.Helper()
	ids := func(ns []*InProcessNode) []peer.ID {
		var out []peer.ID
		for _, n := range ns {
			out = append(out, n.PeerID())
		}
		return out
	}
	for _, pair := range [][2][]*InProcessNode{{a, b}, {b, a}} {
		for _, n := range pair[0] {
			var err error
			if block {
				err = n.N.Host().Partition(ids(pair[1])...)
			} else {
				err = n.N.Host().Heal(ids(pair[1])...)
			}
			if err != nil {
				t.Fatalf("testnet: partition: %v", err)
			}
		}
	}
}

// RestartInProcessNode starts a node again on the data dir and libp2p
// listen addresses of cfg as given (a host that reboots keeps its
// address), without waiting for it to be ready.
func RestartInProcessNode(t testing.TB, cfg node.Config) *InProcessNode {
	t.Helper()
	if cfg.P2P.Gater == nil {
		cfg.P2P.Gater = p2p.NewPartitionGater()
	}
	return startInProcess(t, cfg, nil)
}

// Ready reads the node's /readyz: its status code and body.
func (n *Node) Ready(ctx context.Context) (int, string, error) {
	code, _, body, err := NewClient(n.URL()).Get(ctx, "/readyz", nil)
	return code, string(body), err
}
