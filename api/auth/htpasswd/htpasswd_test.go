package htpasswd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func entry(t *testing.T, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(h) + "\n"
}

func TestParseRefusesOtherHashes(t *testing.T) {
	cases := map[string]string{
		"md5":   "alice:$apr1$abc$def\n",
		"sha":   "# c\nbob:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n",
		"plain": "carol:secret\n",
		"nocol": "dave\n",
	}
	wantLine := map[string]string{"md5": "line 1", "sha": "line 2", "plain": "line 1", "nocol": "line 1"}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(in))
			if err == nil || !strings.Contains(err.Error(), wantLine[name]) {
				t.Fatalf("Parse(%q) = %v, want an error naming %s", in, err, wantLine[name])
			}
		})
	}
}

func TestVerifyAndReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(entry(t, "alice", "a")+entry(t, "bob", "b")), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Verify("alice", "a") || !f.Verify("alice", "a") || f.Verify("alice", "b") || f.Verify("eve", "a") {
		t.Fatal("wrong answers before reload")
	}
	if err := os.WriteFile(path, []byte(entry(t, "bob", "b")), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.Verify("alice", "a") {
		if time.Now().After(deadline) {
			t.Fatal("alice still accepted 5 s after removal")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !f.Verify("bob", "b") {
		t.Fatal("bob refused after reload")
	}
	// A broken file keeps the last good users and reports the error.
	var reported error
	f.w.OnReload = func(err error) {
		if err != nil {
			reported = err
		}
	}
	if err := os.WriteFile(path, []byte("bob:{SHA}x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for reported == nil {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatal("broken file never reported")
		}
		f.Verify("bob", "b")
		time.Sleep(50 * time.Millisecond)
	}
	if !f.Verify("bob", "b") || !strings.Contains(reported.Error(), "line 1") {
		t.Fatalf("after a broken reload: bob refused or error %v names no line", reported)
	}
}
