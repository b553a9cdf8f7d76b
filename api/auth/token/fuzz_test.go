package token

import (
	"errors"
	"testing"

	"github.com/meshreg/meshreg/api/auth"
)

// FuzzVerify: whatever a client sends as a bearer token, Verify returns an
// identity or a token error, never panics, and accepts nothing it did not
// sign.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f, Config{})
	good := fx.issue(f, "alice", "repository:team/app:pull").Token
	for _, s := range []string{good, tamper(good), "", ".", "..", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", good + "x", good[:len(good)-3]} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := fx.svc.Verify(raw)
		if err != nil {
			var te *auth.TokenError
			if !errors.As(err, &te) || te.Reason == "" {
				t.Fatalf("Verify error %v is not a token error with a reason", err)
			}
			return
		}
		if raw != good || id.User != "alice" {
			t.Fatalf("Verify accepted %q as %+v", raw, id)
		}
	})
}

// FuzzParseScope: a scope never yields a resource this registry does not
// grant, nor an action outside pull, push, delete.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"repository:a/b:pull,push", "registry:catalog:*", "repository(plugin):x:*", "repository::pull", ":::", "repository:a:b:c:pull"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := parseScope(s)
		if !ok {
			return
		}
		switch a.Type {
		case "registry":
			if a.Name != "catalog" {
				t.Fatalf("%q: registry scope %q", s, a.Name)
			}
		case "repository":
			if a.Name == "" || len(a.Actions) == 0 {
				t.Fatalf("%q: empty name or actions: %+v", s, a)
			}
			for _, act := range a.Actions {
				if act != "pull" && act != "push" && act != "delete" {
					t.Fatalf("%q: action %q", s, act)
				}
			}
		default:
			t.Fatalf("%q: type %q", s, a.Type)
		}
	})
}
