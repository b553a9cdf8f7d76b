package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// newPeerID makes a fresh ed25519 peer id.
func newPeerID(t testing.TB) string {
	t.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id.String()
}

func revokedBody(entries ...string) []byte {
	return []byte(`{"revoked":[` + strings.Join(entries, ",") + `]}`)
}

func revokedEntry(id string) string { return fmt.Sprintf(`{"id":%q,"at":1764523800,"by":"alice"}`, id) }

// TestRevokedFollowersApply: a good list is stored and reads back.
func TestRevokedFollowersApply(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	id := newPeerID(t)
	body := revokedBody(revokedEntry(id))
	a.must(Command{Op: OpPutSetting, Name: SettingRevokedFollowers, Body: body})
	read(t, a.db, func(r Reader) {
		b, err := r.Setting(SettingRevokedFollowers)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ParseRevokedFollowers(b)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := l.Find(id); !ok || got.By != "alice" || got.At != 1764523800 {
			t.Errorf("Find(%s) = %+v, %v; want the entry written", id, got, ok)
		}
	})
}

// TestRevokedFollowersHostileInputs: every list outside the bounds is
// refused by Validate (at propose) and, proposed anyway, by Apply, with
// the state unchanged.
func TestRevokedFollowersHostileInputs(t *testing.T) {
	t.Parallel()
	a := &applier{t: t, db: openDB(t)}
	good := newPeerID(t)
	goodBody := revokedBody(revokedEntry(good))
	a.must(Command{Op: OpPutSetting, Name: SettingRevokedFollowers, Body: goodBody})

	id := newPeerID(t)
	many := make([]string, MaxRevokedFollowers+1)
	for i := range many {
		many[i] = fmt.Sprintf(`{"id":%q,"at":1}`, newPeerID(t))
	}
	pid, _ := peer.Decode(id)
	for name, body := range map[string][]byte{
		"not JSON":        []byte("12D3KooW"),
		"no list":         []byte(`{"other":[]}`),
		"list of strings": []byte(`{"revoked":["` + id + `"]}`),
		"bad id":          revokedBody(revokedEntry("not-a-peer-id")),
		"empty id":        revokedBody(`{"id":"","at":1}`),
		"non-canonical":   revokedBody(revokedEntry(peer.ToCid(pid).String())),
		"duplicate":       revokedBody(revokedEntry(id), revokedEntry(id)),
		"negative time":   revokedBody(fmt.Sprintf(`{"id":%q,"at":-1}`, id)),
		"long by":         revokedBody(fmt.Sprintf(`{"id":%q,"at":1,"by":%q}`, id, strings.Repeat("b", MaxRevokedByBytes+1))),
		"control in by":   revokedBody(fmt.Sprintf(`{"id":%q,"at":1,"by":"a\nb"}`, id)),
		"too many":        revokedBody(many...),
		"oversized":       revokedBody(revokedEntry(id) + strings.Repeat(" ", MaxSettingBytes)),
	} {
		c := Command{Op: OpPutSetting, Name: SettingRevokedFollowers, Body: body}
		if err := c.Validate(); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: Validate = %v, want ErrInvalidCommand", name, err)
		}
		if got, resp := a.apply(c); !errors.Is(resp, ErrInvalidCommand) || !got.Failed {
			t.Errorf("%s: Apply = %+v, %v; want a failed entry with ErrInvalidCommand", name, got, resp)
		}
	}
	read(t, a.db, func(r Reader) {
		if b, err := r.Setting(SettingRevokedFollowers); err != nil || string(b) != string(goodBody) {
			t.Errorf("the list after hostile writes = %q, %v; want the good one unchanged", b, err)
		}
	})
}

// TestRevokedFollowersFitsAtItsBound: the largest list of ed25519 ids with
// short names fits MaxSettingBytes, so the bound of entries is the one an
// operator meets.
func TestRevokedFollowersFitsAtItsBound(t *testing.T) {
	t.Parallel()
	entries := make([]string, MaxRevokedFollowers)
	for i := range entries {
		entries[i] = fmt.Sprintf(`{"id":%q,"at":1764523800,"by":"operator"}`, newPeerID(t))
	}
	body := revokedBody(entries...)
	if len(body) > MaxSettingBytes {
		t.Fatalf("%d entries take %d bytes, over MaxSettingBytes %d", MaxRevokedFollowers, len(body), MaxSettingBytes)
	}
	if err := (Command{Op: OpPutSetting, Name: SettingRevokedFollowers, Body: body}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// FuzzParseRevokedFollowers: any body parses or is refused, never panics;
// a list it takes is within the bounds, and written back it parses to the
// same list (what the leader does when it adds an id).
func FuzzParseRevokedFollowers(f *testing.F) {
	f.Add([]byte(`{"revoked":[]}`))
	f.Add([]byte(`{"revoked":[{"id":"12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo","at":1,"by":"alice"}]}`))
	f.Add([]byte(`{"revoked":[{"id":"QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N","at":0}]}`))
	f.Add([]byte(`{"revoked":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		l, err := ParseRevokedFollowers(body)
		if err != nil {
			return
		}
		if len(l.Revoked) > MaxRevokedFollowers {
			t.Fatalf("%d entries taken, at most %d", len(l.Revoked), MaxRevokedFollowers)
		}
		again, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		l2, err := ParseRevokedFollowers(again)
		if err != nil && len(again) <= MaxSettingBytes {
			t.Fatalf("a list taken, written back, is refused: %v\n%s", err, again)
		}
		if err == nil && !reflect.DeepEqual(l, l2) {
			t.Fatalf("written back, the list changed: %+v, then %+v", l, l2)
		}
	})
}
