package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/token"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// memSettings is a settings store in memory (test only).
type memSettings struct {
	m      map[string][]byte
	writes int
}

func (s *memSettings) PutSetting(_ context.Context, name string, body []byte) error {
	s.m[name] = body
	s.writes++
	return nil
}

func (s *memSettings) Setting(name string) ([]byte, error) {
	b, ok := s.m[name]
	if !ok {
		return nil, consensus.ErrNotFound
	}
	return b, nil
}

func (s *memSettings) keys(t *testing.T) token.KeySet {
	t.Helper()
	var set token.KeySet
	if err := json.Unmarshal(s.m[state.SettingAuthTokenKeys], &set); err != nil {
		t.Fatal(err)
	}
	return set
}

func TestTokenKeyRotator(t *testing.T) {
	t.Parallel()
	store := &memSettings{m: map[string][]byte{}}
	leader := false
	now := time.Unix(1_800_000_000, 0)
	k := newTokenKeyRotator(store, func() bool { return leader }, time.Hour, 5*time.Minute, slog.New(slog.DiscardHandler))
	k.now = func() time.Time { return now }
	ctx := context.Background()

	if have, err := k.round(ctx); err != nil || have || store.writes != 0 {
		t.Fatalf("a follower wrote a key (have %v, err %v, writes %d)", have, err, store.writes)
	}
	leader = true
	if have, err := k.round(ctx); err != nil || !have || store.writes != 1 {
		t.Fatalf("the leader did not write a first key (have %v, err %v, writes %d)", have, err, store.writes)
	}
	first := store.keys(t).Keys[0].ID
	if _, err := k.round(ctx); err != nil || store.writes != 1 {
		t.Fatalf("the leader rewrote a key that is not due (writes %d, %v)", store.writes, err)
	}
	now = now.Add(time.Hour)
	if _, err := k.round(ctx); err != nil || store.writes != 2 {
		t.Fatalf("no rotation after an hour (writes %d, %v)", store.writes, err)
	}
	set := store.keys(t)
	if len(set.Keys) != 2 || set.Keys[1].ID != first || set.Keys[0].ID == first {
		t.Fatalf("after rotation: %d keys, want the new one and the previous one", len(set.Keys))
	}
	now = now.Add(5 * time.Minute)
	if _, err := k.round(ctx); err != nil || len(store.keys(t).Keys) != 1 {
		t.Fatalf("the retired key was kept past keep (%d keys, %v)", len(store.keys(t).Keys), err)
	}
	// A set that does not decode is replaced, not a crash loop.
	store.m[state.SettingAuthTokenKeys] = []byte("{")
	if have, err := k.round(ctx); err != nil || !have || len(store.keys(t).Keys) != 1 {
		t.Fatalf("a broken set was not replaced (%v)", err)
	}
}

// TestTokenKeysThroughRaft: a real one-node cluster with the token service
// on writes its first key through Raft soon after it starts; a rotation
// (played a day later) replaces the current key, and a token signed by the
// previous one still verifies, read from the node's state as every node
// reads it.
func TestTokenKeysThroughRaft(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	cfg.TokenKeys = true
	n, err := Open(cfg, tlog.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	running(t, n)
	deadline := time.Now().Add(15 * time.Second)
	for {
		if b, err := n.TokenKeys(); err == nil && b != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no token signing key 15 s after start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	users := allUsers{}
	svc, err := token.New(token.Config{}, token.NewKeys(n.TokenKeys), users, auth.AuthenticatedOnly)
	if err != nil {
		t.Fatal(err)
	}
	old, err := svc.Issue(auth.Identity{User: "alice"}, "", []string{"repository:a:pull"})
	if err != nil {
		t.Fatal(err)
	}

	r := n.tokenKeys().(*tokenKeyRotator)
	r.now = func() time.Time { return time.Now().Add(cfg.TokenKeyRotation) }
	if _, err := r.round(t.Context()); err != nil {
		t.Fatalf("rotation: %v", err)
	}
	b, _ := n.TokenKeys()
	var set token.KeySet
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) != 2 {
		t.Fatalf("after the rotation the state holds %d keys (%v), want 2", len(set.Keys), err)
	}
	time.Sleep(300 * time.Millisecond) // the service reads the set again
	if _, err := svc.Verify(old.Token); err != nil {
		t.Errorf("a token signed by the previous key was refused after the rotation: %v", err)
	}
	fresh, err := svc.Issue(auth.Identity{User: "alice"}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if kid := kidOf(t, fresh.Token); kid != set.Keys[0].ID || kid == kidOf(t, old.Token) {
		t.Errorf("a token issued after the rotation has kid %s, want the new key %s", kid, set.Keys[0].ID)
	}
}

type allUsers struct{}

func (allUsers) Verify(string, string) bool { return true }
func (allUsers) Exists(string) bool         { return true }

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	h, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct{ Kid string }
	if err := json.Unmarshal(h, &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr.Kid
}
