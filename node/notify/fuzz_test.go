package notify

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: any file is a Config or an error, never a panic, and an
// error never quotes the secret.
func FuzzParse(f *testing.F) {
	f.Add("endpoints: [{name: a, url: 'http://h/', secret: topsecret}]")
	f.Add("endpoints:\n  - name: ci\n    url: https://h/x\n    headers: {A: [b]}\n    events: [push, pull]\n    repositories: ['a/**']\n    ignore: {actions: [mount]}\n")
	f.Add("endpoints: [{name: a, url: 'http://h/', threshold: topsecret}]")
	f.Fuzz(func(t *testing.T, file string) {
		c, err := Parse([]byte(file))
		if err != nil {
			if strings.Contains(file, "secret: topsecret") && strings.Contains(err.Error(), "topsecret") {
				t.Fatalf("the secret is in the error: %v", err)
			}
			return
		}
		for _, e := range c.Endpoints {
			if !nameRE.MatchString(e.Name) || e.MaxPending < 1 || e.Backoff <= 0 || e.MaxBackoff < e.Backoff {
				t.Fatalf("accepted a bad endpoint %+v", e)
			}
		}
	})
}

// FuzzQueueOpen: a queue opens from any log file (damaged records are
// skipped), its pending events are in order, and it takes more.
func FuzzQueueOpen(f *testing.F) {
	f.Add([]byte("{\"seq\":1,\"event\":{\"id\":\"a\"}}\n{\"seq\":2,\"event\":{\"id\":\"b\"}}\n"), "0")
	f.Add([]byte("{\"seq\":2,\"event\":{}}\nnot json\n{\"seq\":1,\"event\":{\"id\":\"x\"}}\n{\"seq\":3,\"ev"), "1")
	f.Add([]byte("{\"seq\":18446744073709551615,\"event\":{\"id\":\"a\"}}\n"), "")
	f.Fuzz(func(t *testing.T, log []byte, acked string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, logName), log, 0o600); err != nil {
			t.Fatal(err)
		}
		if acked != "" {
			if err := os.WriteFile(filepath.Join(dir, ackedName), []byte(acked), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		q, _, _, err := openQueue(dir, 5)
		if err != nil {
			return // a damaged acked file is an error that says what to do
		}
		defer q.close()
		recs := q.peek(1 << 20)
		if len(recs) > 5 {
			t.Fatalf("%d pending past the bound", len(recs))
		}
		for i := 1; i < len(recs); i++ {
			if recs[i].Seq <= recs[i-1].Seq {
				t.Fatalf("pending out of order: %d after %d", recs[i].Seq, recs[i-1].Seq)
			}
		}
		if _, err := q.push(ev(1)); err != nil {
			t.Fatal(err)
		}
		after := q.peek(1 << 20)
		if n := len(after); n > 1 && after[n-1].Seq <= after[n-2].Seq {
			t.Fatalf("a pushed event's seq %d is not after %d", after[n-1].Seq, after[n-2].Seq)
		}
	})
}
