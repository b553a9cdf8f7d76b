package notify

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func ev(i int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"id":"e%d"}`, i)) }

func seqs(q *queue) []string {
	var out []string
	for _, r := range q.peek(1 << 20) {
		out = append(out, string(r.Event))
	}
	return out
}

func mustOpen(t *testing.T, dir string, max int) *queue {
	t.Helper()
	q, skipped, dropped, err := openQueue(dir, max)
	if err != nil {
		t.Fatal(err)
	}
	if skipped != 0 || dropped != 0 {
		t.Fatalf("open: skipped %d, dropped %d", skipped, dropped)
	}
	return q
}

// TestQueueSurvivesReopen: what was pushed and not acknowledged is there,
// in order, after the queue is closed and opened again; what was
// acknowledged is not; sequence numbers go on.
func TestQueueSurvivesReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, dir, 100)
	for i := 1; i <= 5; i++ {
		if _, err := q.push(ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.ack(q.peek(2)[1].Seq); err != nil {
		t.Fatal(err)
	}
	if err := q.close(); err != nil {
		t.Fatal(err)
	}
	q = mustOpen(t, dir, 100)
	want := []string{`{"id":"e3"}`, `{"id":"e4"}`, `{"id":"e5"}`}
	if got := seqs(q); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopen: %v, want %v", got, want)
	}
	if _, err := q.push(ev(6)); err != nil {
		t.Fatal(err)
	}
	recs := q.peek(10)
	if recs[len(recs)-1].Seq != 6 {
		t.Fatalf("seq after reopen = %d, want 6", recs[len(recs)-1].Seq)
	}
	// All delivered: the log is emptied, and nothing comes back.
	if err := q.ack(6); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, logName)); err != nil || fi.Size() != 0 {
		t.Fatalf("log after everything was delivered: %v, %v", fi, err)
	}
	q.close()
	q = mustOpen(t, dir, 100)
	defer q.close()
	if n := q.len(); n != 0 {
		t.Fatalf("%d pending after everything was delivered", n)
	}
	if _, err := q.push(ev(7)); err != nil {
		t.Fatal(err)
	}
	if s := q.peek(1)[0].Seq; s != 7 {
		t.Fatalf("seq after an emptied log = %d, want 7", s)
	}
}

// TestQueueTornTail: a crash in the middle of an append leaves half a
// line; the queue opens with the complete records and appends after them.
func TestQueueTornTail(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, dir, 100)
	q.push(ev(1))
	q.push(ev(2))
	q.close()
	f, err := os.OpenFile(filepath.Join(dir, logName), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":3,"event":{"id":"e`)
	f.Close()
	q = mustOpen(t, dir, 100)
	q.push(ev(3))
	q.close()
	q = mustOpen(t, dir, 100)
	defer q.close()
	want := []string{`{"id":"e1"}`, `{"id":"e2"}`, `{"id":"e3"}`}
	if got := seqs(q); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after a torn append: %v, want %v", got, want)
	}
}

// TestQueueBound: past max the oldest are dropped, and stay dropped
// after a reopen; a smaller max on reopen drops down to it.
func TestQueueBound(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, dir, 3)
	total := 0
	for i := 1; i <= 5; i++ {
		d, err := q.push(ev(i))
		if err != nil {
			t.Fatal(err)
		}
		total += d
	}
	if total != 2 {
		t.Fatalf("dropped %d, want 2", total)
	}
	want := []string{`{"id":"e3"}`, `{"id":"e4"}`, `{"id":"e5"}`}
	if got := seqs(q); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bounded queue: %v, want %v", got, want)
	}
	q.close()
	q, _, dropped, err := openQueue(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	if got := seqs(q); dropped != 2 || fmt.Sprint(got) != `[{"id":"e5"}]` {
		t.Fatalf("reopened with max 1: %v (dropped %d)", got, dropped)
	}
}

// TestQueueCompacts: a long-running queue whose receiver keeps up (but
// never empties it) does not grow its log without bound, and a reopen
// after compactions finds exactly what is pending.
func TestQueueCompacts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := mustOpen(t, dir, 1000)
	q.compact = 8
	for i := 1; i <= 200; i++ {
		if _, err := q.push(ev(i)); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // one behind: the log is never emptied
			if err := q.ack(uint64(i - 1)); err != nil {
				t.Fatal(err)
			}
		}
	}
	fi, err := os.Stat(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 20*40 {
		t.Fatalf("log is %d bytes after 200 events with 1 pending: not compacted", fi.Size())
	}
	q.close()
	q = mustOpen(t, dir, 1000)
	defer q.close()
	if got := seqs(q); fmt.Sprint(got) != `[{"id":"e200"}]` {
		t.Fatalf("after compactions and a reopen: %v", got)
	}
}

// BenchmarkQueuePush is the cost a write pays for one endpoint: an
// append and an fsync of the event (about 600 bytes).
func BenchmarkQueuePush(b *testing.B) {
	q, _, _, err := openQueue(b.TempDir(), DefaultMaxPending)
	if err != nil {
		b.Fatal(err)
	}
	defer q.close()
	ev := json.RawMessage(`{"id":"00000000-0000-4000-8000-000000000000","timestamp":"2026-01-02T15:04:05Z","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1234,"length":1234,"repository":"team/app","url":"http://registry.example:5000/v2/team/app/manifests/sha256:0000000000000000000000000000000000000000000000000000000000000000","tag":"v1"},"request":{"id":"0123456789abcdef0123456789abcdef","addr":"10.0.0.1","host":"registry.example:5000","method":"PUT","useragent":"crane/0.20"},"actor":{"name":"ci"},"source":{"addr":"10.0.0.5:5000","instanceID":"12D3KooWAbCdEf"}}`)
	for b.Loop() {
		if _, err := q.push(ev); err != nil {
			b.Fatal(err)
		}
		if q.len() >= DefaultMaxPending-1 {
			q.ack(q.peek(DefaultMaxPending)[q.len()-1].Seq)
		}
	}
}

// TestQueueSkipsDamaged: a record damaged in the middle of the log is
// skipped and counted; those around it are kept.
func TestQueueSkipsDamaged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := "{\"seq\":1,\"event\":{\"id\":\"e1\"}}\n{\"seq\":2,\"eve\x00\x01\n{\"seq\":3,\"event\":{\"id\":\"e3\"}}\n"
	if err := os.WriteFile(filepath.Join(dir, logName), []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	q, skipped, _, err := openQueue(dir, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	if got := seqs(q); skipped != 1 || fmt.Sprint(got) != `[{"id":"e1"} {"id":"e3"}]` {
		t.Fatalf("skipped %d, pending %v", skipped, got)
	}
}
