package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// TestNodeCommandsOverTLS: against a node serving HTTPS with
// --tls-client-ca, an admin command trusts the node's CA with --tls-ca
// (or MESHREG_TLS_CA) and presents a client certificate with
// --tls-client-cert/--tls-client-key (or MESHREG_TLS_CLIENT_*); without
// the CA it fails with a certificate error naming --tls-ca, without the
// client certificate with the node's UNAUTHORIZED message.
func TestNodeCommandsOverTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "node CA")
	cert, key := ca.Server(t, 2).Files(t)
	clientCert, clientKey := ca.Client(t, 3, "operator").Files(t)
	addr := startServe(t, "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca.CertFile)
	node := "https://" + addr

	out, err := runMeshreg(t, "cluster", "members", "--node", node, "--tls-ca", ca.CertFile,
		"--tls-client-cert", clientCert, "--tls-client-key", clientKey)
	if err != nil || !strings.Contains(out, "Voter") {
		t.Errorf("cluster members with the CA and a client certificate: %v\n%s", err, out)
	}
	_, err = runMeshreg(t, "cluster", "members", "--node", node, "--tls-client-cert", clientCert, "--tls-client-key", clientKey)
	if err == nil || !strings.Contains(err.Error(), "certificate") || !strings.Contains(err.Error(), "--tls-ca") {
		t.Errorf("cluster members without the CA: %v, want a certificate error naming --tls-ca", err)
	}
	_, err = runMeshreg(t, "cluster", "members", "--node", node, "--tls-ca", ca.CertFile)
	if err == nil || !strings.Contains(err.Error(), "client certificate") || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Errorf("cluster members without a client certificate: %v, want the node's UNAUTHORIZED about client certificates", err)
	}
	_, err = runMeshreg(t, "token", "create", "--node", node, "--tls-ca", ca.CertFile, "--tls-client-cert", clientCert)
	if err == nil || !strings.Contains(err.Error(), "--tls-client-cert needs --tls-client-key") {
		t.Errorf("token create with a client certificate and no key: %v", err)
	}

	t.Setenv("MESHREG_TLS_CA", ca.CertFile)
	t.Setenv("MESHREG_TLS_CLIENT_CERT", clientCert)
	t.Setenv("MESHREG_TLS_CLIENT_KEY", clientKey)
	if out, err := runMeshreg(t, "token", "create", "--node", node, "--ttl", "1m"); err != nil || !strings.Contains(out, "--join "+node) {
		t.Errorf("token create with the TLS files from the environment: %v\n%s", err, out)
	}
}

// TestJoinByHTTPSURLWithJoinTLSCA: a node joins a member named by an
// https URL whose certificate is signed by a private CA, given with
// --join-tls-ca; both then list two members. serve --check refuses a
// --join-tls-ca file with no certificate.
func TestJoinByHTTPSURLWithJoinTLSCA(t *testing.T) {
	ca := tlstest.NewCA(t, "cluster CA")
	cert, key := ca.Server(t, 2).Files(t)
	first := "https://" + startServe(t, "--tls-cert", cert, "--tls-key", key)
	tok, err := runMeshreg(t, "token", "create", "--node", first, "--tls-ca", ca.CertFile, "--ttl", "5m")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, tok)
	}
	tok, _, _ = strings.Cut(tok, "\n")

	if _, err := runCheck(t, "--join", first, "--join-tls-ca", key, "--join-token", tok); err == nil || !strings.Contains(err.Error(), "--join-tls-ca") {
		t.Errorf("serve --check with a key as --join-tls-ca: %v, want refused naming the flag", err)
	}

	second := startServe(t, "--join", first, "--join-tls-ca", ca.CertFile, "--join-token", tok)
	for _, node := range []string{first, second} {
		var out string
		ok := eventually(20*time.Second, func() bool {
			out, err = runMeshreg(t, "cluster", "members", "--node", node, "--tls-ca", ca.CertFile)
			return err == nil && strings.Count(out, "\n12D3KooW") == 2
		})
		if !ok {
			t.Errorf("cluster members on %s: %v, want two members\n%s", node, err, out)
		}
	}
}

func eventually(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
