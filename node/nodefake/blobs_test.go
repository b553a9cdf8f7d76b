package nodefake

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/meshreg/meshreg/blobstore"
)

// TestBlobsDamageHooks: Corrupt is a write the store sees (the copy is no
// longer held, any Verify finds it); Rot is decay below it (held, and only
// a forced Verify finds it). Either is quarantined and reported once.
func TestBlobsDamageHooks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		damage    func(*Blobs, digest.Digest) bool
		held      bool // after the damage
		lazyFinds bool // a Verify without force finds it
	}{
		{name: "corrupt", damage: (*Blobs).Corrupt, held: false, lazyFinds: true},
		{name: "rot", damage: (*Blobs).Rot, held: true, lazyFinds: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := NewBlobs()
			var reports []digest.Digest
			s.OnCorrupt(func(d digest.Digest, _ int64, _ error) { reports = append(reports, d) })
			blob := []byte("some bytes")
			d := digest.FromBytes(blob)
			if tc.damage(s, d) {
				t.Fatal("damaged a blob not held")
			}
			if _, err := s.Put(d, bytes.NewReader(blob)); err != nil {
				t.Fatal(err)
			}
			if !tc.damage(s, d) {
				t.Fatal("the blob just put is not held")
			}
			if s.Held(d) != tc.held {
				t.Errorf("held = %v after the damage, want %v", s.Held(d), tc.held)
			}
			err := s.Verify(context.Background(), d, false, nil)
			if found := errors.Is(err, blobstore.ErrCorrupt); found != tc.lazyFinds {
				t.Errorf("Verify without force: %v; want it found: %v", err, tc.lazyFinds)
			}
			if !tc.lazyFinds {
				if err := s.Verify(context.Background(), d, true, nil); !errors.Is(err, blobstore.ErrCorrupt) {
					t.Errorf("forced Verify: %v, want ErrCorrupt", err)
				}
			}
			if len(reports) != 1 || reports[0] != d || s.Quarantined() != 1 || s.Held(d) {
				t.Errorf("reports %v, quarantined %d, held %v; want one report and the copy gone", reports, s.Quarantined(), s.Held(d))
			}
		})
	}
}
