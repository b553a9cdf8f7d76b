package testnet

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// KeepDir creates a directory for the test that is removed when the test
// passes and kept (its path logged) when it fails or MESHREG_E2E_KEEP=1.
// Unlike t.TempDir, a failed run leaves its data, logs and reports behind
// for inspection.
func KeepDir(t testing.TB, what string) string {
	t.Helper()
	base := os.Getenv(EnvDir)
	if base != "" {
		if err := os.MkdirAll(base, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp(base, "meshreg-e2e-"+sanitize(t.Name())+"-"+what+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv(EnvKeep) == "1" {
			t.Logf("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, name)
}

// UniqueRepo returns prefix plus a random suffix, a repository name no
// other run uses (so tests can share an external registry).
func UniqueRepo(prefix string) string {
	return prefix + "-" + RandomHex(4)
}

// RandomHex returns 2n random lowercase hex digits.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
