package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/api/tlsconf/tlstest"
)

// TestServeCheckTLS: --tls-cert and --tls-key come both or neither, a
// client CA only with them, and files that do not load are refused by
// `serve --check` as by serve; a good setup is printed back.
func TestServeCheckTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "check CA")
	cert, key := ca.Server(t, 2).Files(t)
	other, _ := ca.Server(t, 3).Files(t)
	missing := filepath.Join(t.TempDir(), "missing.crt")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // in the error; "" for accepted
	}{
		{name: "cert and key", args: []string{"--tls-cert", cert, "--tls-key", key}},
		{name: "from the environment, with a client CA", env: map[string]string{"MESHREG_TLS_CERT": cert, "MESHREG_TLS_KEY": key, "MESHREG_TLS_CLIENT_CA": ca.CertFile}},
		{name: "cert without key", args: []string{"--tls-cert", cert}, want: "--tls-cert needs --tls-key"},
		{name: "key without cert", env: map[string]string{"MESHREG_TLS_KEY": key}, want: "--tls-key needs --tls-cert"},
		{name: "client CA without cert", args: []string{"--tls-client-ca", ca.CertFile}, want: "--tls-client-ca needs --tls-cert"},
		{name: "key of another certificate", args: []string{"--tls-cert", other, "--tls-key", key}, want: "private key does not match"},
		{name: "missing cert file", args: []string{"--tls-cert", missing, "--tls-key", key}, want: "missing.crt"},
		{name: "client CA not a certificate", args: []string{"--tls-cert", cert, "--tls-key", key, "--tls-client-ca", key}, want: "no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, err := runCheck(t, tc.args...)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("serve --check: %v, want an error saying %q; printed:\n%s", err, tc.want, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("serve --check: %v\n%s", err, out)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("serve --check printed no JSON: %v\n%s", err, out)
			}
			if got["tls-cert"] != cert || got["tls-key"] != key {
				t.Errorf("printed tls-cert %v, tls-key %v; want %s, %s", got["tls-cert"], got["tls-key"], cert, key)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.0.0.2:5000": true, "[::1]:5000": true, "localhost:5000": true,
		":5000": false, "0.0.0.0:5000": false, "[::]:5000": false, "10.0.0.5:5000": false, "meshreg.example:5000": false,
	} {
		if got := isLoopback(listen); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", listen, got, want)
		}
	}
}
