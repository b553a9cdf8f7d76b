package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// fleetNode is a test-only api.Node that lists the cluster's nodes.
type fleetNode struct {
	memberNode
	doc any
	err error
}

func (f *fleetNode) Nodes(context.Context) (any, error) { return f.doc, f.err }

// TestNodesEndpoint: GET /_meshreg/v1/nodes is an admin endpoint (loopback
// only without authentication) serving the node's fleet document; a node
// without the ability answers 404, one that cannot read its members 503.
func TestNodesEndpoint(t *testing.T) {
	doc := map[string]any{"nodes": []map[string]string{{"id": "a", "role": "leader"}, {"id": "b", "role": "follower", "source": "a"}}}
	for _, tc := range []struct {
		name   string
		node   api.Node
		remote string
		want   int
		body   string
	}{
		{"fleet", &fleetNode{doc: doc}, "127.0.0.1:4000", http.StatusOK, `"source":"a"`},
		{"not loopback", &fleetNode{doc: doc}, "10.0.0.1:4000", http.StatusForbidden, "DENIED"},
		{"members unreadable", &fleetNode{err: errors.New("store closed")}, "127.0.0.1:4000", http.StatusServiceUnavailable, "store closed"},
		{"no fleet view", &memberNode{}, "127.0.0.1:4000", http.StatusNotFound, "does not list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := api.New(api.DefaultConfig(), nil, tc.node, nil, tlog.Logger(t, slog.LevelWarn))
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/_meshreg/v1/nodes", nil)
			r.RemoteAddr = tc.remote
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.body) {
				t.Fatalf("GET /_meshreg/v1/nodes: %d %s, want %d with %q", w.Code, w.Body, tc.want, tc.body)
			}
			if tc.want == http.StatusOK && !json.Valid(w.Body.Bytes()) {
				t.Errorf("not JSON: %s", w.Body)
			}
		})
	}
}
