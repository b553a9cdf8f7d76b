package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/tlog"
)

// TestPprofListen: --pprof-listen serves the profiles on loopback and is
// refused on any other address (they are served without authentication).
func TestPprofListen(t *testing.T) {
	for _, bad := range []string{"0.0.0.0:6060", ":6060", "example.com:6060", "10.1.2.3:6060"} {
		if err := checkPprofListen(bad); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Errorf("--pprof-listen %s: %v, want a refusal that asks for loopback", bad, err)
		}
	}
	if err := checkPprofListen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	ln, err := testnet.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	stop, err := servePprof(t.Context(), ln, tlog.Logger(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + ln + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("GET /debug/pprof/goroutine: %s %.200s", resp.Status, body)
	}
}
