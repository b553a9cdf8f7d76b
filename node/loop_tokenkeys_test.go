package node

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api/auth/token"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
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
