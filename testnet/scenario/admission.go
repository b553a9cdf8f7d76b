package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshreg/meshreg/testnet"
)

// Admission of the run's nodes: a node joins with a join token that the
// node it joins through issues (`meshreg token create` run inside that
// container, where the API is on loopback); nodes started together with
// --bootstrap-expect share one random --join-token as their secret.

// admit gives n a join token issued by via.
func (r *run) admit(ctx context.Context, n, via *node) error {
	out, err := via.c.Exec(ctx, "/meshreg", "token", "create", "--node", "http://127.0.0.1:5000", "--ttl", "24h")
	if err != nil {
		return fmt.Errorf("a join token for %s from %s: %w", n.spec.Name, via.spec.Name, err)
	}
	tok := strings.TrimSpace(out)
	if !strings.HasPrefix(tok, "mrj1.") {
		return fmt.Errorf("a join token for %s from %s: got %q", n.spec.Name, via.spec.Name, out)
	}
	// A fresh slice: the scenario's own Args must not be written through.
	n.spec.Args = slices.Concat(withoutJoinToken(n.spec.Args), []string{"--join-token", tok})
	return nil
}

// withoutJoinToken drops a --join-token an earlier start added.
func withoutJoinToken(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if args[i] == "--join-token" {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// bootstrapSecret is a random shared --join-token for nodes started with
// --bootstrap-expect.
func bootstrapSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// voters is the --voters the scenario's args give the nodes (3 if none).
func (r *run) voters() int {
	v := 3
	for i, a := range r.s.Args {
		val, ok := strings.CutPrefix(a, "--voters=")
		if a == "--voters" && i+1 < len(r.s.Args) {
			val, ok = r.s.Args[i+1], true
		}
		if n, err := strconv.Atoi(val); ok && err == nil {
			v = n
		}
	}
	return v
}

// waitVoters waits until every running node counts as many voters as a
// cluster of nodes members settles on: joiners are promoted only after
// their stabilization time, and load must not start on a cluster whose
// one voter is all its quorum.
func (r *run) waitVoters(ctx context.Context, nodes int, timeout time.Duration) error {
	want := testnet.ExpectedVoters(nodes, r.voters())
	var last string
	start := time.Now()
	if !poll(ctx, timeout, 250*time.Millisecond, func() bool {
		for _, n := range r.cl.running() {
			st, err := r.cl.status(ctx, n)
			if err != nil {
				last = err.Error()
				return false
			}
			if st.Voters() != want {
				last = fmt.Sprintf("%s counts %d voters", n.spec.Name, st.Voters())
				return false
			}
		}
		return true
	}) {
		return fmt.Errorf("the %d nodes did not settle on %d voters in %s (last: %s); see the node logs in %s", nodes, want, timeout, last, filepath.Join(r.outDir, "logs"))
	}
	r.log.Info("voters promoted", "voters", want, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
