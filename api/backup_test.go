package api_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// backupNode is a test-only api.Node with the Backuper ability: it writes
// body, or fails with err after writing body.
type backupNode struct {
	memberNode
	body  string
	err   error
	calls []bool
}

func (b *backupNode) Backup(_ context.Context, w io.Writer, blobs bool) error {
	b.calls = append(b.calls, blobs)
	if _, err := io.WriteString(w, b.body); err != nil {
		return err
	}
	return b.err
}

// TestBackupEndpoint: GET /_meshreg/v1/backup is an admin endpoint (loopback
// only without auth) that streams the node's archive, passes ?blobs=1 on,
// refuses a bad blobs value, and answers an OCI error when the backup
// fails before its first byte.
func TestBackupEndpoint(t *testing.T) {
	for _, tc := range []struct {
		name, remote, query string
		node                backupNode
		want                int
		wantBody            string
		wantBlobs           []bool
	}{
		{name: "not loopback", remote: "10.0.0.1:1", node: backupNode{body: "tar"}, want: http.StatusForbidden, wantBody: "DENIED"},
		{name: "metadata", remote: "127.0.0.1:1", node: backupNode{body: "tar"}, want: http.StatusOK, wantBody: "tar", wantBlobs: []bool{false}},
		{name: "blobs", remote: "127.0.0.1:1", query: "?blobs=1", node: backupNode{body: "tar"}, want: http.StatusOK, wantBody: "tar", wantBlobs: []bool{true}},
		{name: "bad blobs value", remote: "127.0.0.1:1", query: "?blobs=yes", want: http.StatusMethodNotAllowed, wantBody: "blobs=1"},
		{name: "fails at once", remote: "127.0.0.1:1", node: backupNode{err: errors.New("disk on fire")}, want: http.StatusInternalServerError,
			wantBody: "errors", wantBlobs: []bool{false}},
		// Midway: the status is out; the body ends without what follows
		// (the archive's trailer), which the client detects.
		{name: "fails midway", remote: "127.0.0.1:1", node: backupNode{body: "half", err: errors.New("peer gone")}, want: http.StatusOK,
			wantBody: "half", wantBlobs: []bool{false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.node
			h, err := api.New(api.DefaultConfig(), nil, &n, nil, tlog.Logger(t, slog.LevelWarn))
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/_meshreg/v1/backup"+tc.query, nil)
			r.RemoteAddr = tc.remote
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.wantBody) {
				t.Fatalf("status %d body %q; want %d with %q", w.Code, w.Body, tc.want, tc.wantBody)
			}
			if w.Code == http.StatusOK && w.Header().Get("Content-Type") != api.BackupMediaType {
				t.Errorf("Content-Type %q", w.Header().Get("Content-Type"))
			}
			if len(n.calls) != len(tc.wantBlobs) || (len(n.calls) == 1 && n.calls[0] != tc.wantBlobs[0]) {
				t.Errorf("backup calls %v, want %v", n.calls, tc.wantBlobs)
			}
		})
	}
}
