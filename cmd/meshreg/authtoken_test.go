package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/api/tlsconf/tlstest"
)

// TestServeCheckTokenFlags: the --auth-token-* settings are checked at
// start, each refusal naming what is missing.
func TestServeCheckTokenFlags(t *testing.T) {
	ca := tlstest.NewCA(t, "token issuer CA")
	dir := t.TempDir()
	users := writeFile(t, filepath.Join(dir, "htpasswd"), "alice:$2y$05$ILFCqXjrqHMpbHQVw1Vj3u9T1DxHIAzqMbfPJ9Af0O0ATx1rZ4.Km\n")
	notPEM := writeFile(t, filepath.Join(dir, "bundle.pem"), "not a certificate\n")
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error; "" for accepted
	}{
		{name: "own token service", args: []string{"--auth-htpasswd", users, "--auth-token-ttl", "10m", "--auth-token-key-rotation", "1h", "--auth-token-service", "reg.example"}},
		{name: "external issuer with users", args: []string{"--auth-htpasswd", users, "--auth-token-issuer", "auth.example", "--auth-token-rootcertbundle", ca.CertFile}},
		{name: "external issuer only", args: []string{"--auth-token-issuer", "auth.example", "--auth-token-rootcertbundle", ca.CertFile, "--auth-token-realm", "https://auth.example/token"}},
		{name: "external issuer without realm", args: []string{"--auth-token-issuer", "auth.example", "--auth-token-rootcertbundle", ca.CertFile}, want: "needs --auth-token-realm"},
		{name: "bundle without issuer", args: []string{"--auth-htpasswd", users, "--auth-token-rootcertbundle", ca.CertFile}, want: "needs --auth-token-issuer"},
		{name: "issuer without bundle", args: []string{"--auth-htpasswd", users, "--auth-token-issuer", "auth.example"}, want: "needs --auth-token-rootcertbundle"},
		{name: "service without auth", args: []string{"--auth-token-service", "x"}, want: "need --auth-htpasswd"},
		{name: "bundle not PEM", args: []string{"--auth-htpasswd", users, "--auth-token-issuer", "a", "--auth-token-rootcertbundle", notPEM}, want: "no PEM certificate"},
		{name: "rotation below ttl", args: []string{"--auth-htpasswd", users, "--auth-token-ttl", "2h", "--auth-token-key-rotation", "1h"}, want: "--auth-token-key-rotation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			out, err := runCheck(t, append([]string{"--data-dir", filepath.Join(t.TempDir(), "data")}, tc.args...)...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v\n%s", err, out)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
