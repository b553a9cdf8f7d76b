package node

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

func newTestIdentity(t *testing.T) (crypto.PrivKey, peer.ID) {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return key, id
}

func TestJoinToken(t *testing.T) {
	t.Parallel()
	key, issuer := newTestIdentity(t)
	otherKey, other := newTestIdentity(t)
	now := time.Unix(1_900_000_000, 0)
	members := func(ids ...peer.ID) func(string) bool {
		return func(id string) bool {
			for _, m := range ids {
				if m.String() == id {
					return true
				}
			}
			return false
		}
	}
	valid, err := issueJoinToken(key, issuer, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// A token signed by a key that is not the issuer's it names.
	p, _, _ := strings.Cut(strings.TrimPrefix(valid, joinTokenPrefix), ".")
	forgedSig, _ := otherKey.Sign([]byte(joinTokenDomain + p))
	forged := joinTokenPrefix + p + "." + b64(forgedSig)
	// The payload changed after signing (a later expiry).
	altered := strings.Replace(valid, p, b64([]byte(`{"iss":"`+issuer.String()+`","exp":1999999999,"n":"00"}`)), 1)
	expired, _ := issueJoinToken(key, issuer, now.Add(-time.Second))
	forever, _ := issueJoinToken(key, issuer, now.Add(MaxJoinTokenTTL+time.Hour))
	byOutsider, _ := issueJoinToken(otherKey, other, now.Add(time.Hour))

	tests := []struct {
		name, token string
		wantErr     string // "" for valid
	}{
		{"valid", valid, ""},
		{"empty", "", "not a meshreg join token"},
		{"garbage", "mrj1.!!!.???", "malformed"},
		{"no signature", joinTokenPrefix + p, "no signature"},
		{"forged signature", forged, "invalid signature"},
		{"altered payload", altered, "invalid signature"},
		{"expired", expired, "expired"},
		{"expiry too far", forever, "too far in the future"},
		{"issuer not a member", byOutsider, "not a member"},
		{"too long", valid + strings.Repeat("A", maxJoinTokenLen), "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := verifyJoinToken(tc.token, now, members(issuer))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("valid token refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("token accepted, want an error with %q", tc.wantErr)
			}
			if !errors.Is(err, ErrNotAdmitted) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "meshreg token create") {
				t.Errorf("error %q: want ErrNotAdmitted with %q and what to do", err, tc.wantErr)
			}
		})
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func BenchmarkVerifyJoinToken(b *testing.B) {
	key, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	issuer, _ := peer.IDFromPrivateKey(key)
	tok, err := issueJoinToken(key, issuer, time.Now().Add(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	member := func(id string) bool { return id == issuer.String() }
	for b.Loop() {
		if err := verifyJoinToken(tok, time.Now(), member); err != nil {
			b.Fatal(err)
		}
	}
}
