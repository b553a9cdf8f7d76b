package consensus

import (
	"errors"
	"testing"

	"github.com/meshreg/meshreg/consensus/state"
)

// TestClusterSettings: a setting written through a follower (forwarded to
// the leader) is read on every member; a hostile one is refused before it
// is proposed, with ErrInvalidCommand, and changes nothing.
func TestClusterSettings(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 3, nil)
	fs := c.followers()
	if _, err := fs[0].Setting(state.SettingAuthTokenKeys); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Setting before any write = %v, want ErrNotFound", err)
	}
	if err := fs[0].PutSetting(ctx, state.SettingAuthTokenKeys, []byte(`{"keys":[1]}`)); err != nil {
		t.Fatalf("PutSetting through a follower: %v", err)
	}
	if err := fs[0].PutSetting(ctx, "quota", []byte("x")); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("PutSetting of an unknown name = %v, want ErrInvalidCommand", err)
	}
	if err := fs[1].PutSetting(ctx, state.SettingAuthTokenKeys, make([]byte, state.MaxSettingBytes+1)); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("PutSetting of an oversized body = %v, want ErrInvalidCommand", err)
	}
	c.converge()
	for _, s := range c.live() {
		if b, err := s.Setting(state.SettingAuthTokenKeys); err != nil || string(b) != `{"keys":[1]}` {
			t.Errorf("%s: Setting = %q, %v; want the write", s.cfg.NodeID, b, err)
		}
	}
}
