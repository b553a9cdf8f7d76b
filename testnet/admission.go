package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
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
	return JoinTokenAt(ctx, n.URL(), ttl)
}

// JoinTokenAt asks the node whose API is at base (on loopback) for a join
// token valid for ttl.
func JoinTokenAt(ctx context.Context, base string, ttl time.Duration) (string, error) {
	u := base + "/_meshreg/v1/join-tokens?ttl=" + ttl.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
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
