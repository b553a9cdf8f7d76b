package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/p2p"
)

// HarnessStabilization is the --stabilization-time the harness gives the
// nodes of StartCluster and StartInProcessCluster unless told otherwise:
// short, so that clusters form quickly, yet long enough to be a real wait.
const HarnessStabilization = time.Second

// ExpectedVoters is how many voters a healthy cluster of members members
// settles on with --voters target: the odd count at most min(members,
// target), since a non-voter is never promoted to an even count.
func ExpectedVoters(members, target int) int {
	v := min(members, target)
	if v%2 == 0 {
		v--
	}
	return max(v, 1)
}

// JoinToken asks node n (from loopback, as `meshreg token create` does) for
// a join token valid for ttl, failing the test if it cannot.
func JoinToken(t testing.TB, n *Node, ttl time.Duration) string {
	t.Helper()
	tok, err := TryJoinToken(t.Context(), n, ttl)
	if err != nil {
		t.Fatalf("testnet: %v", err)
	}
	return tok
}

// TryJoinToken is JoinToken returning its error.
func TryJoinToken(ctx context.Context, n *Node, ttl time.Duration) (string, error) {
	return joinTokenWith(ctx, n.HTTPClient(), n.URL(), ttl)
}

// JoinTokenAt asks the node whose API is at base (on loopback) for a join
// token valid for ttl.
func JoinTokenAt(ctx context.Context, base string, ttl time.Duration) (string, error) {
	return joinTokenWith(ctx, http.DefaultClient, base, ttl)
}

func joinTokenWith(ctx context.Context, client *http.Client, base string, ttl time.Duration) (string, error) {
	u := base + "/_meshreg/v1/join-tokens?ttl=" + ttl.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST %s: %w", u, err)
	}
	defer resp.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("POST %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.Token == "" {
		return "", fmt.Errorf("POST %s: no token in the answer: %v", u, err)
	}
	return tok.Token, nil
}

// hasFlag reports whether args set flag (as "--flag V" or "--flag=V").
func hasFlag(args []string, flag string) bool {
	return slices.ContainsFunc(args, func(a string) bool { return a == flag || strings.HasPrefix(a, flag+"=") })
}

// StartInProcessExpecting prepares size in-process nodes that are each
// told about every node (--join with all their API URLs) and to expect size
// nodes before bootstrapping (--bootstrap-expect), each config edited by
// tweak; it starts the first `first` of them at once and returns them with
// a function that starts the rest. It waits for nothing.
func StartInProcessExpecting(t testing.TB, size, first int, tweak func(i int, c *node.Config)) ([]*InProcessNode, func() []*InProcessNode) {
	t.Helper()
	var lns []net.Listener
	var urls []string
	for range size {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		lns = append(lns, ln)
		urls = append(urls, "http://"+ln.Addr().String())
	}
	start := func(i int) *InProcessNode {
		cfg := node.DefaultConfig()
		cfg.DataDir = KeepDir(t, "inproc")
		cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
		cfg.P2P.Gater = p2p.NewPartitionGater()
		cfg.Join = urls
		cfg.BootstrapExpect = size
		if tweak != nil {
			tweak(i, &cfg)
		}
		return startInProcess(t, cfg, lns[i])
	}
	var started []*InProcessNode
	for i := range first {
		started = append(started, start(i))
	}
	return started, func() []*InProcessNode {
		var rest []*InProcessNode
		for i := first; i < size; i++ {
			rest = append(rest, start(i))
		}
		return rest
	}
}
