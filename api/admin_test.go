package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// memberNode is a test-only api.Node that records the members it was
// asked to remove.
type memberNode struct{ removed []string }

func (m *memberNode) Ready(context.Context) error { return nil }
func (m *memberNode) Status(context.Context) any  { return struct{}{} }
func (m *memberNode) RemoveMember(_ context.Context, id, _ string) (api.Removal, error) {
	m.removed = append(m.removed, id)
	return api.RemovedMember, nil
}

// TestAdminEndpointsLoopbackOnly: removing a member is refused, with an OCI
// DENIED error, to any client whose TCP peer is not on loopback, whatever
// headers it sends; loopback clients (IPv4 127.0.0.0/8, IPv6 ::1) are
// served.
func TestAdminEndpointsLoopbackOnly(t *testing.T) {
	const id = "12D3KooWLeaderLeaderLeaderLeaderLeaderLeaderLeader"
	cases := []struct {
		name   string
		remote string
		header map[string]string
		want   int
	}{
		{name: "private network", remote: "10.1.2.3:1234", want: http.StatusForbidden},
		{name: "public IPv6", remote: "[2001:db8::1]:443", want: http.StatusForbidden},
		{name: "spoofed forwarding headers", remote: "192.0.2.7:5555", want: http.StatusForbidden,
			header: map[string]string{"X-Forwarded-For": "127.0.0.1", "X-Real-Ip": "127.0.0.1"}},
		{name: "IPv4-mapped non-loopback", remote: "[::ffff:10.0.0.1]:80", want: http.StatusForbidden},
		{name: "loopback", remote: "127.0.0.1:40000", want: http.StatusNoContent},
		{name: "other loopback address", remote: "127.0.0.2:40000", want: http.StatusNoContent},
		{name: "IPv6 loopback", remote: "[::1]:40000", want: http.StatusNoContent},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := &memberNode{}
			h, err := api.New(api.DefaultConfig(), nil, n, nil, tlog.Logger(t, slog.LevelWarn))
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodDelete, "/_meshreg/v1/members/"+id, nil)
			r.RemoteAddr = tc.remote
			for k, v := range tc.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("DELETE members from %s: status %d, want %d; body %s", tc.remote, w.Code, tc.want, w.Body)
			}
			if tc.want != http.StatusForbidden {
				if len(n.removed) != 1 || n.removed[0] != id {
					t.Fatalf("the node was asked to remove %v, want [%s]", n.removed, id)
				}
				return
			}
			if len(n.removed) != 0 {
				t.Fatalf("a refused request still removed %v", n.removed)
			}
			var body struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 {
				t.Fatalf("want one OCI error, got %q (%v)", w.Body, err)
			}
			if body.Errors[0].Code != "DENIED" || w.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("want code DENIED as JSON, got %+v, Content-Type %q", body.Errors[0], w.Header().Get("Content-Type"))
			}
			t.Logf("message: %s", body.Errors[0].Message)
		})
	}
}
