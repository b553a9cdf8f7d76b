package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
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
