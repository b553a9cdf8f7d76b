package api_test

import (
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/auth"
	"github.com/meshreg/meshreg/api/auth/htpasswd"
	"github.com/meshreg/meshreg/api/auth/policy"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// auditRegistry is a real node with authentication on (testPolicy) whose
// handler, and whose access files' reloads, log JSON to the returned
// buffer.
func auditRegistry(t *testing.T) (r *registry, logs *logBuffer, policyFile string) {
	t.Helper()
	dir := t.TempDir()
	usersFile := filepath.Join(dir, "htpasswd")
	policyFile = filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(usersFile, htpasswdLines(t, "alice", "bob"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policyFile, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	logs = &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	users, err := htpasswd.Open(usersFile, api.AuditReload(log, "--auth-htpasswd", usersFile))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Open(policyFile, api.AuditReload(log, "--auth-policy", policyFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.P2P.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0"}
	n, err := node.Open(cfg, tlog.Logger(t, slog.LevelWarn))
	if err != nil {
		t.Fatal(err)
	}
	acfg := api.DefaultConfig()
	acfg.Auth = &auth.Guard{Authn: &auth.Basic{Users: users}, Authz: pol}
	h, err := api.New(acfg, n, n, api.NewMetrics(prometheus.NewRegistry()), log)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	r = &registry{t: t, url: srv.URL, dir: cfg.DataDir, node: n, srv: srv}
	t.Cleanup(r.close)
	return r, logs, policyFile
}

// auditLines returns the INFO lines logged since the last take, failing
// the test if one of them is not an audit line.
func auditLines(t *testing.T, logs *logBuffer) []map[string]any {
	t.Helper()
	got := logs.take(t, slog.LevelInfo)
	for _, l := range got {
		if l["audit"] != true {
			t.Errorf("an INFO line without audit=true: %v", l)
		}
	}
	return got
}

// TestAuditLog: each push, refused write, admin action (done or refused)
// and access policy reload is exactly one INFO line with audit=true and
// who, what, from where and the result.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	r, logs, policyFile := auditRegistry(t)
	alice, bob := r.as("alice", "alice-pw"), r.as("bob", "bob-pw")
	const client = "127.0.0.1"

	// alice pushes: one line per blob and one for the manifest, each
	// naming her.
	m := alice.image("team/app", "a")
	for _, l := range auditLines(t, logs) {
		if l["msg"] != "blob uploaded" || l["user"] != "alice" || l["result"] != "ok" {
			t.Errorf("alice's blob upload logged as %v", l)
		}
	}
	resp, body := alice.pushManifest("team/app", "v1", "application/vnd.oci.image.manifest.v1+json", m)
	expect(t, resp, body, 201, "")
	expectLines(t, "alice's push", auditLines(t, logs), map[string]any{
		"msg": "manifest pushed", "audit": true, "user": "alice", "repository": "team/app", "reference": "v1",
		"size": len(m), "client": client, "result": "ok"})

	// bob may only pull team/: his push is one denied line.
	resp, body = bob.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 403, "DENIED")
	expectLines(t, "bob's push", auditLines(t, logs), map[string]any{
		"msg": "push denied", "audit": true, "user": "bob", "action": "push", "repository": "team/app",
		"client": client, "result": "denied", "code": "DENIED"})
	// A read is no audit event, allowed or not.
	resp, body = bob.do("GET", "/v2/team/app/manifests/v1", nil, "Accept", "application/vnd.oci.image.manifest.v1+json")
	expect(t, resp, body, 200, "")
	resp, body = bob.do("GET", "/v2/secret/x/tags/list", nil)
	expect(t, resp, body, 403, "DENIED")
	expectLines(t, "bob's reads", auditLines(t, logs))

	// An anonymous delete, and one with a wrong password.
	resp, body = r.do("DELETE", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	expectLines(t, "anonymous delete", auditLines(t, logs), map[string]any{
		"msg": "delete denied", "audit": true, "user": "anonymous", "action": "delete", "repository": "team/app",
		"reference": "v1", "client": client, "result": "denied", "code": "UNAUTHORIZED"})
	resp, body = r.as("alice", "wrong").do("DELETE", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, 401, "UNAUTHORIZED")
	expectLines(t, "delete with a wrong password", auditLines(t, logs), map[string]any{
		"msg": "delete denied", "user": "alice (unauthenticated)", "result": "denied", "code": "UNAUTHORIZED"})

	// alice deletes the tag.
	resp, body = alice.do("DELETE", "/v2/team/app/manifests/v1", nil)
	expect(t, resp, body, 202, "")
	expectLines(t, "alice's delete", auditLines(t, logs), map[string]any{
		"msg": "tag deleted", "user": "alice", "repository": "team/app", "reference": "v1", "result": "ok"})

	// Admin: a removal by alice of a peer id that is no member revokes it
	// as a follower (the line names the revocation, the second time is an
	// error and the line says so), a removal of what is no peer id,
	// bob's attempt, a join token.
	resp, body = alice.do("DELETE", "/_meshreg/v1/members/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", nil)
	expect(t, resp, body, 200, "")
	expectLines(t, "alice's revocation", auditLines(t, logs), map[string]any{
		"msg": "admin follower revocation", "audit": true, "user": "alice", "action": "admin", "op": "revoke", "method": "DELETE",
		"path": "/_meshreg/v1/members/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", "client": client, "result": "ok"})
	resp, body = alice.do("DELETE", "/_meshreg/v1/members/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", nil)
	expect(t, resp, body, 409, "ALREADY_REVOKED")
	expectLines(t, "alice's second revocation", auditLines(t, logs), map[string]any{
		"msg": "admin follower revocation", "user": "alice", "op": "revoke", "result": "error", "status": 409})
	resp, body = alice.do("DELETE", "/_meshreg/v1/members/not-a-peer-id", nil)
	expect(t, resp, body, 404, "MEMBER_UNKNOWN")
	expectLines(t, "alice's member removal", auditLines(t, logs), map[string]any{
		"msg": "admin member removal", "audit": true, "user": "alice", "action": "admin", "method": "DELETE",
		"path": "/_meshreg/v1/members/not-a-peer-id", "client": client, "result": "error", "status": 404})
	resp, body = bob.do("DELETE", "/_meshreg/v1/members/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", nil)
	expect(t, resp, body, 403, "DENIED")
	expectLines(t, "bob's member removal", auditLines(t, logs), map[string]any{
		"msg": "admin denied", "audit": true, "user": "bob", "action": "admin", "method": "DELETE",
		"path": "/_meshreg/v1/members/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", "client": client, "result": "denied", "code": "DENIED"})
	resp, body = alice.do("POST", "/_meshreg/v1/join-tokens", nil)
	expect(t, resp, body, 201, "")
	expectLines(t, "alice's join token", auditLines(t, logs), map[string]any{
		"msg": "admin join token creation", "user": "alice", "result": "ok"})

	// A policy change is applied (bob may push now), then a broken one is
	// rejected: one line each, seen by the next request that checks.
	reload := func(step, content, want string) map[string]any {
		t.Helper()
		if err := os.WriteFile(policyFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, body := bob.do("GET", "/v2/team/app/tags/list", nil)
			expect(t, resp, body, 200, "")
			if got := auditLines(t, logs); len(got) > 0 {
				expectLines(t, step, got, map[string]any{"msg": want, "audit": true, "file": policyFile})
				return got[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no audit line 5 s after the change", step)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	l := reload("policy applied", testPolicy+"  - users: [bob]\n    repos: [\"team/**\"]\n    allow: [push]\n", "--auth-policy reloaded")
	if l["result"] != "ok" {
		t.Errorf("applied reload: %v", l)
	}
	resp, body = bob.do("POST", "/v2/team/app/blobs/uploads/", nil)
	expect(t, resp, body, 202, "")
	auditLines(t, logs)
	l = reload("policy rejected", "rules:\n  - users: [bob]\n    allow: [fly]\n", "--auth-policy reload rejected; the last good one stays in effect")
	if l["result"] != "error" || !strings.Contains(l["err"].(string), "line") || l["level"] != "WARN" {
		t.Errorf("rejected reload: %v (want a WARN, result error and the error with its line)", l)
	}
	// The file stays broken: no further line, however many checks.
	time.Sleep(auth.ReloadInterval + 200*time.Millisecond)
	resp, body = bob.do("GET", "/v2/team/app/tags/list", nil)
	expect(t, resp, body, 200, "")
	expectLines(t, "still broken", auditLines(t, logs))
}

// TestAuditAdminWithoutAuth: with authentication off, a member removal
// from loopback and one refused to another address are one audit line
// each, the user anonymous and the client the TCP peer (not a forwarding
// header).
func TestAuditAdminWithoutAuth(t *testing.T) {
	t.Parallel()
	const id = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
	logs := &logBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := api.New(api.DefaultConfig(), nil, &memberNode{}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		remote, client string
		status         int
		want           map[string]any
	}{
		{"10.1.2.3:1234", "10.1.2.3", 403, map[string]any{"msg": "admin denied", "result": "denied", "code": "DENIED"}},
		{"127.0.0.1:4000", "127.0.0.1", 204, map[string]any{"msg": "admin member removal", "result": "ok"}},
	} {
		r := httptest.NewRequest("DELETE", "/_meshreg/v1/members/"+id, nil)
		r.RemoteAddr = tc.remote
		r.Header.Set("X-Forwarded-For", "192.0.2.9")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tc.status {
			t.Fatalf("from %s: status %d, want %d", tc.remote, w.Code, tc.status)
		}
		tc.want["audit"], tc.want["user"], tc.want["client"], tc.want["action"] = true, "anonymous", tc.client, "admin"
		expectLines(t, "removal from "+tc.remote, auditLines(t, logs), tc.want)
	}
}
