package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/meshreg/meshreg/api/auth/token"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
)

// settingStore is the replicated settings of the metadata store
// (consensus.Store has them; node/nodefake does not, and runs without a
// token service).
type settingStore interface {
	PutSetting(ctx context.Context, name string, body []byte) error
	Setting(name string) ([]byte, error)
}

var _ settingStore = (*consensus.Store)(nil)

// Check intervals of the key rotator: often while the cluster has no key
// (the token endpoint answers 503 until then), rarely once it has one.
const (
	tokenKeyCheckNoKey = time.Second
	tokenKeyCheck      = 30 * time.Second
)

// tokenKeyRotator keeps the token service's signing keys in the replicated
// state (state.SettingAuthTokenKeys): on the leader, it writes a key when
// there is none and a new one every `every`, keeping retired keys for
// `keep` (the token TTL plus the skew allowed), so tokens they signed
// verify until they expire (token.Rotate). Followers only read the set.
// Only the leader writes, so two nodes never rotate at once.
type tokenKeyRotator struct {
	store    settingStore
	leader   func() bool
	every    time.Duration
	keep     time.Duration
	log      *slog.Logger
	now      func() time.Time
	interval func(haveKey bool) time.Duration
}

func newTokenKeyRotator(store settingStore, leader func() bool, every, keep time.Duration, log *slog.Logger) *tokenKeyRotator {
	return &tokenKeyRotator{store: store, leader: leader, every: every, keep: keep, log: log, now: time.Now,
		interval: func(haveKey bool) time.Duration {
			if haveKey {
				return min(tokenKeyCheck, every/4)
			}
			return tokenKeyCheckNoKey
		}}
}

func (k *tokenKeyRotator) Run(ctx context.Context) error {
	for {
		haveKey, err := k.round(ctx)
		if err != nil && ctx.Err() == nil {
			k.log.Warn("token signing keys: rotation failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(k.interval(haveKey)):
		}
	}
}

// round rotates the key set if this node leads and it is due; haveKey
// reports whether the cluster has a key.
func (k *tokenKeyRotator) round(ctx context.Context) (haveKey bool, err error) {
	b, err := k.store.Setting(state.SettingAuthTokenKeys)
	if err != nil && !errors.Is(err, consensus.ErrNotFound) {
		return false, fmt.Errorf("reading the key set: %w", err)
	}
	haveKey = len(b) > 0
	if !k.leader() {
		return haveKey, nil
	}
	var set *token.KeySet
	if haveKey {
		set = &token.KeySet{}
		if err := json.Unmarshal(b, set); err != nil {
			k.log.Warn("token signing keys: the stored set does not decode; writing a new one (tokens issued so far stop verifying)", "err", err)
			set = nil
		}
	}
	next, changed, err := token.Rotate(set, k.now(), k.every, k.keep)
	if err != nil || !changed {
		return haveKey, err
	}
	body, err := next.Encode()
	if err != nil {
		return haveKey, err
	}
	if err := k.store.PutSetting(ctx, state.SettingAuthTokenKeys, body); err != nil {
		return haveKey, fmt.Errorf("writing the key set: %w", err)
	}
	k.log.Info("token signing key set updated", "current_kid", next.Keys[0].ID, "keys", len(next.Keys))
	return true, nil
}

// tokenKeys is the key rotator, or a loop that does nothing when the token
// service is off (or the store has no settings).
func (n *Node) tokenKeys() loop {
	store, ok := n.meta.(settingStore)
	if !n.cfg.TokenKeys || !ok {
		return idleLoop{}
	}
	leader := func() bool { return n.meta.Status().State == consensus.Leader }
	return newTokenKeyRotator(gatedSettings{store, n.membersApply}, leader, n.cfg.TokenKeyRotation, n.cfg.TokenTTL+token.Leeway, n.log.With("component", "token-keys"))
}

// gatedSettings writes a setting only once every member applies settings
// (features.go): until then the write fails and the rotator tries again.
type gatedSettings struct {
	settingStore
	membersApply func(state.Op) error
}

func (g gatedSettings) PutSetting(ctx context.Context, name string, body []byte) error {
	if err := g.membersApply(state.OpPutSetting); err != nil {
		return err
	}
	return g.settingStore.PutSetting(ctx, name, body)
}

// idleLoop waits for the end.
type idleLoop struct{}

func (idleLoop) Run(ctx context.Context) error { <-ctx.Done(); return nil }

// TokenKeys returns the token signing key set as this node applied it
// (nil when the cluster has none yet): token.NewKeys reads it.
func (n *Node) TokenKeys() ([]byte, error) {
	store, ok := n.meta.(settingStore)
	if !ok {
		return nil, nil
	}
	b, err := store.Setting(state.SettingAuthTokenKeys)
	if errors.Is(err, consensus.ErrNotFound) {
		return nil, nil
	}
	return b, err
}
