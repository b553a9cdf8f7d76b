package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"
)

// The revoked followers of the metadata (SettingRevokedFollowers), as the
// setting's body:
//
//	{"revoked":[{"id":"12D3KooW…","at":1764523800,"by":"alice"}, …]}
//
// id is the follower's peer id (canonical form), at when it was revoked
// (Unix seconds, the proposer's clock: informative only), by who asked
// for it as the API knew them ("" if unknown). The list only grows: a
// revoked identity never comes back (the host joins again with a new
// one). Each write replaces the whole list, so the leader alone reads,
// adds and writes it back (node/revoke.go), one change at a time.
const (
	// MaxRevokedFollowers bounds the list; a body must also fit
	// MaxSettingBytes (512 entries with short "by" names do).
	MaxRevokedFollowers = 512
	// MaxRevokedByBytes bounds an entry's "by".
	MaxRevokedByBytes = 64
)

// RevokedFollowers is the body of SettingRevokedFollowers.
type RevokedFollowers struct {
	Revoked []Revocation `json:"revoked"`
}

// Revocation is one revoked follower.
type Revocation struct {
	ID string `json:"id"`
	At int64  `json:"at"`
	By string `json:"by,omitempty"`
}

// ParseRevokedFollowers decodes and checks a SettingRevokedFollowers body:
// a JSON object whose list holds at most MaxRevokedFollowers entries, each
// a canonical libp2p peer id named once, a time not before 1970 and a
// short printable "by". It is deterministic: every node refuses the same
// bodies (Validate at propose, Apply at apply).
func ParseRevokedFollowers(body []byte) (RevokedFollowers, error) {
	var l RevokedFollowers
	if len(body) > MaxSettingBytes {
		return l, fmt.Errorf("the revoked followers list is %d bytes: at most %d", len(body), MaxSettingBytes)
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return RevokedFollowers{}, fmt.Errorf("the revoked followers list is not the JSON {\"revoked\":[{\"id\":…,\"at\":…,\"by\":…}]}: %w", err)
	}
	if l.Revoked == nil {
		return RevokedFollowers{}, errors.New(`the revoked followers list has no "revoked" array`)
	}
	if len(l.Revoked) > MaxRevokedFollowers {
		return RevokedFollowers{}, fmt.Errorf("the revoked followers list has %d entries: at most %d", len(l.Revoked), MaxRevokedFollowers)
	}
	seen := make(map[string]bool, len(l.Revoked))
	for i, r := range l.Revoked {
		id, err := peer.Decode(r.ID)
		switch {
		case err != nil:
			return RevokedFollowers{}, fmt.Errorf("revoked follower %d: %q is not a peer id: %w", i, truncate(r.ID), err)
		case id.String() != r.ID:
			return RevokedFollowers{}, fmt.Errorf("revoked follower %d: %q is not a peer id in its canonical form %s", i, truncate(r.ID), id)
		case seen[r.ID]:
			return RevokedFollowers{}, fmt.Errorf("revoked follower %s is listed twice", r.ID)
		case r.At < 0:
			return RevokedFollowers{}, fmt.Errorf("revoked follower %s: time %d is negative", r.ID, r.At)
		case len(r.By) > MaxRevokedByBytes:
			return RevokedFollowers{}, fmt.Errorf("revoked follower %s: \"by\" is %d bytes: at most %d", r.ID, len(r.By), MaxRevokedByBytes)
		case !printable(r.By):
			return RevokedFollowers{}, fmt.Errorf("revoked follower %s: \"by\" %q is not printable UTF-8", r.ID, truncate(r.By))
		}
		seen[r.ID] = true
	}
	return l, nil
}

// Find returns the revocation of id, ok false if it is not revoked.
func (l RevokedFollowers) Find(id string) (Revocation, bool) {
	for _, r := range l.Revoked {
		if r.ID == id {
			return r, true
		}
	}
	return Revocation{}, false
}

func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}
