package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// gcNode is a test-only api.Node that collects garbage by recording the
// requests it got.
type gcNode struct {
	memberNode
	got []api.GCRequest
}

func (g *gcNode) CollectGarbage(_ context.Context, req api.GCRequest, progress func(string)) (api.GCResult, error) {
	g.got = append(g.got, req)
	progress("marked")
	return api.GCResult{Blobs: 2, Bytes: 10, Grace: req.Grace.String(), DryRun: req.DryRun}, nil
}

// TestGCEndpoint: POST /_meshreg/v1/gc streams progress lines then the
// result as newline-delimited JSON, passes grace and dry_run through,
// refuses a bad grace with a clear 400, and is an admin endpoint
// (loopback only without authentication).
func TestGCEndpoint(t *testing.T) {
	cases := []struct {
		name, query, remote string
		want                int
		req                 *api.GCRequest
	}{
		{name: "defaults", remote: "127.0.0.1:1", want: http.StatusOK, req: &api.GCRequest{Grace: time.Hour}},
		{name: "grace and dry run", query: "?grace=0s&dry_run=1", remote: "127.0.0.1:1", want: http.StatusOK, req: &api.GCRequest{DryRun: true}},
		{name: "negative grace", query: "?grace=-1s", remote: "127.0.0.1:1", want: http.StatusBadRequest},
		{name: "absurd grace", query: "?grace=100000h", remote: "127.0.0.1:1", want: http.StatusBadRequest},
		{name: "bad dry run", query: "?dry_run=maybe", remote: "127.0.0.1:1", want: http.StatusBadRequest},
		{name: "not loopback", remote: "10.0.0.1:1", want: http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := &gcNode{}
			h, err := api.New(api.DefaultConfig(), nil, n, nil, tlog.Logger(t, slog.LevelWarn))
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodPost, "/_meshreg/v1/gc"+tc.query, nil)
			r.RemoteAddr = tc.remote
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d; body %s", w.Code, tc.want, w.Body)
			}
			if tc.req == nil {
				if len(n.got) != 0 || !strings.Contains(w.Body.String(), `"errors"`) {
					t.Fatalf("a refused request ran a collection (%v) or has no OCI error: %s", n.got, w.Body)
				}
				return
			}
			if len(n.got) != 1 || n.got[0] != *tc.req {
				t.Fatalf("the node got %+v, want %+v", n.got, *tc.req)
			}
			var lines []api.GCLine
			sc := bufio.NewScanner(w.Body)
			for sc.Scan() {
				var l api.GCLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatalf("line %q: %v", sc.Text(), err)
				}
				lines = append(lines, l)
			}
			if len(lines) != 2 || lines[0].Progress != "marked" || lines[1].Result == nil || lines[1].Result.Blobs != 2 {
				t.Fatalf("answer lines %+v; want a progress line, then the result", lines)
			}
		})
	}
}
