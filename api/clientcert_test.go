package api_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// TestRequireClientCert: with RequireClientCert, a request without a
// verified client certificate gets 401 UNAUTHORIZED as an OCI error,
// except the health probes; one with a verified certificate is served.
func TestRequireClientCert(t *testing.T) {
	t.Parallel()
	verified := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{{}}}}
	const member = "/_meshreg/v1/members/12D3KooWLeaderLeaderLeaderLeaderLeaderLeaderLeader"
	for _, tc := range []struct {
		name, method, path string
		tls                *tls.ConnectionState
		want               int
	}{
		{"plain HTTP", http.MethodGet, "/v2/", nil, http.StatusUnauthorized},
		{"TLS without a client certificate", http.MethodGet, "/v2/", &tls.ConnectionState{}, http.StatusUnauthorized},
		{"admin without a client certificate", http.MethodDelete, member, &tls.ConnectionState{}, http.StatusUnauthorized},
		{"admin with a verified certificate", http.MethodDelete, member, verified, http.StatusNoContent},
		{"liveness probe without a certificate", http.MethodGet, "/healthz", &tls.ConnectionState{}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := api.DefaultConfig()
			cfg.RequireClientCert = true
			h, err := api.New(cfg, nil, &memberNode{}, nil, tlog.Logger(t, slog.LevelWarn))
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(tc.method, tc.path, nil)
			r.RemoteAddr, r.TLS = "127.0.0.1:4000", tc.tls
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.want, w.Body)
			}
			if tc.want != http.StatusUnauthorized {
				return
			}
			var body struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 || body.Errors[0].Code != "UNAUTHORIZED" {
				t.Fatalf("want one UNAUTHORIZED error, got %s (%v)", w.Body, err)
			}
		})
	}
}
