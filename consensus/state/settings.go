package state

import (
	"fmt"
	"slices"

	"github.com/meshreg/meshreg/consensus/state/policy"
)

// Cluster settings: named records replicated through Raft (OpPutSetting)
// and replaced whole by each write. The set of names is closed: a write of
// a name not listed here is refused at propose and at apply, the same way
// on every node, so a newer node cannot store what an older one would not
// understand without everyone refusing it alike.
//
// The body's format belongs to whoever owns the name; the state only
// bounds it.
const (
	// SettingAuthTokenKeys is the token service's signing key set (JSON,
	// see api/auth/token.KeySet).
	SettingAuthTokenKeys = "auth.token-keys"
	// SettingPolicy is the content policy: retention, immutable tags and
	// quotas (YAML, see package policy). Apply enforces it (policy.go).
	SettingPolicy = "policy"
	// SettingRevokedFollowers is the list of revoked followers of the
	// metadata (JSON, see RevokedFollowers): peer ids the members refuse
	// passes, tails, blobs and joins to, for good.
	SettingRevokedFollowers = "followers.revoked"
	// MaxSettingBytes bounds one setting's body.
	MaxSettingBytes = 64 << 10
)

// settingNames is the closed set of setting names.
var settingNames = []string{SettingAuthTokenKeys, SettingPolicy, SettingRevokedFollowers}

// KnownSetting reports whether name is a setting the state stores.
func KnownSetting(name string) bool { return slices.Contains(settingNames, name) }

// checkSetting validates a setting write.
func checkSetting(name string, body []byte) error {
	switch {
	case !KnownSetting(name):
		return fmt.Errorf("setting %q is not one this version knows (%v)", truncate(name), settingNames)
	case len(body) == 0:
		return fmt.Errorf("setting %s has an empty body", name)
	case len(body) > MaxSettingBytes:
		return fmt.Errorf("setting %s is %d bytes: at most %d", name, len(body), MaxSettingBytes)
	case name == SettingPolicy:
		// Checked at apply too: a member that stores a policy every node
		// parses alike, or none.
		if _, err := policy.Parse(body); err != nil {
			return err
		}
	case name == SettingRevokedFollowers:
		// Checked at apply too: every node enforces the same list.
		if _, err := ParseRevokedFollowers(body); err != nil {
			return err
		}
	}
	return nil
}

// Setting returns the body of the named setting; ErrNotFound if none was
// written.
func (r Reader) Setting(name string) ([]byte, error) {
	notFound := fmt.Errorf("consensus: setting %s: %w", truncate(name), ErrNotFound)
	if !KnownSetting(name) {
		return nil, notFound
	}
	v, ok, err := r.t.get(settingKey(name))
	if err != nil {
		return nil, fmt.Errorf("consensus: reading setting %s: %w", name, err)
	}
	if !ok {
		return nil, notFound
	}
	return v, nil
}
