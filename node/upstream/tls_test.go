package upstream

import (
	"context"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTLSSettings(t *testing.T) {
	f := newFakeRegistry(t)
	want := f.addImage("a/b", "t", []byte("x"))
	tlsSrv := httptest.NewTLSServer(f.srv.Config.Handler)
	t.Cleanup(tlsSrv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	badCA := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(badCA, []byte("not a certificate"), 0o600)

	ctx := context.Background()
	open := func(cfg Config) (*Registry, error) {
		cfg.Name, cfg.URL = "tls.example", tlsSrv.URL
		r, err := New(cfg)
		if err == nil {
			t.Cleanup(r.CloseIdleConnections)
		}
		return r, err
	}
	r, _ := open(Config{})
	if _, err := r.Resolve(ctx, "a/b", "t"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("unknown CA: %v, want ErrUnavailable about the certificate", err)
	}
	for name, cfg := range map[string]Config{"CA file": {CAFile: caFile}, "skip verify": {SkipVerify: true}} {
		r, err := open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := r.Resolve(ctx, "a/b", "t"); err != nil || got.Digest != want.Digest {
			t.Fatalf("%s: %+v, %v", name, got, err)
		}
	}
	if _, err := open(Config{CAFile: badCA}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("bad CA file: %v, want a clear error", err)
	}
	if _, err := open(Config{CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil {
		t.Fatal("missing CA file accepted")
	}

	// An https upstream whose challenge sends credentials to a plain-http
	// realm is refused.
	f.auth = func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("WWW-Authenticate", `Bearer realm="http://127.0.0.1:1/token",service="s"`)
		w.WriteHeader(http.StatusUnauthorized)
		return false
	}
	r, _ = open(Config{SkipVerify: true, Credentials: staticCreds{"tls.example": {"u", "p"}}})
	if _, err := r.Resolve(ctx, "a/b", "t"); !errors.Is(err, ErrBadResponse) || !strings.Contains(err.Error(), "plain http") {
		t.Fatalf("http realm for an https upstream: %v, want ErrBadResponse", err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{URL: "https://r.example"},
		{Name: "r", URL: "ftp://r.example"},
		{Name: "r", URL: "r.example"},
		{Name: "r", URL: "https://user:pw@r.example"},
		{Name: "r", URL: "https://r.example/?x=1"},
	} {
		_, err := New(cfg)
		if err == nil {
			t.Errorf("New(%+v) accepted", cfg)
			continue
		}
		if strings.Contains(err.Error(), "pw") {
			t.Errorf("error %q shows the password", err)
		}
	}
}
