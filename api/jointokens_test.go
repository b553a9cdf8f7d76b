package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestJoinTokenEndpoint(t *testing.T) {
	r := newRegistry(t, t.TempDir(), nil)

	resp, body := r.do(http.MethodPost, "/_meshreg/v1/join-tokens?ttl=10m", nil)
	expect(t, resp, body, http.StatusCreated, "")
	var tok struct {
		Token   string    `json:"token"`
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || !strings.HasPrefix(tok.Token, "mrj1.") {
		t.Fatalf("body %s: want a join token: %v", body, err)
	}
	if left := time.Until(tok.Expires); left < 9*time.Minute || left > 11*time.Minute {
		t.Errorf("token expires in %s, want about 10m", left)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}

	for _, ttl := range []string{"soon", "-5m", "0s", "9999h"} {
		resp, body := r.do(http.MethodPost, "/_meshreg/v1/join-tokens?ttl="+ttl, nil)
		expect(t, resp, body, http.StatusBadRequest, "UNSUPPORTED")
	}

	// From another host: refused, as an attacker on the network sees it.
	req := httptest.NewRequest(http.MethodPost, "/_meshreg/v1/join-tokens", nil)
	req.RemoteAddr = "192.0.2.7:40000"
	rec := httptest.NewRecorder()
	r.srv.Config.Handler.ServeHTTP(rec, req)
	res := rec.Result()
	b, _ := io.ReadAll(res.Body)
	res.Request = req
	expect(t, res, b, http.StatusForbidden, "DENIED")
	if strings.Contains(string(b), "mrj1.") {
		t.Fatalf("a non-loopback caller got a token: %s", b)
	}
}
