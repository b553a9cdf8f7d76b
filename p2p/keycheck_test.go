package p2p

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/p2p/net/pnet"
	ma "github.com/multiformats/go-multiaddr"
)

// recordLog keeps the messages of WARN and above (and passes every record
// on to next).
type recordLog struct {
	next slog.Handler
	mu   *sync.Mutex
	msgs *[]string
}

func newRecordLog(next slog.Handler) recordLog {
	return recordLog{next: next, mu: &sync.Mutex{}, msgs: &[]string{}}
}

func (r recordLog) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (r recordLog) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= slog.LevelWarn {
		r.mu.Lock()
		*r.msgs = append(*r.msgs, rec.Message)
		r.mu.Unlock()
	}
	return r.next.Handle(ctx, rec)
}
func (r recordLog) WithAttrs(as []slog.Attr) slog.Handler {
	return recordLog{next: r.next.WithAttrs(as), mu: r.mu, msgs: r.msgs}
}
func (r recordLog) WithGroup(g string) slog.Handler {
	return recordLog{next: r.next.WithGroup(g), mu: r.mu, msgs: r.msgs}
}

// count is how many recorded messages contain s.
func (r recordLog) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range *r.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

// TestClusterKeyMismatch connects hosts whose private-network keys differ
// (one has none, or another one): the dialing side's error must say that
// the cluster key is probably missing or different and name --cluster-key,
// and the keyed side that is dialed must log it, once per remote a minute
// however often it retries (and so must a node without a key that a keyed
// peer dials). A peer with the right key connects and is not logged.
func TestClusterKeyMismatch(t *testing.T) {
	t.Parallel()
	_, key := writeSwarmKey(t)
	_, otherKey := writeSwarmKey(t)
	rec, pubRec := newRecordLog(testLogger(t).Handler()), newRecordLog(testLogger(t).Handler())
	keyed := newTestHost(t, func(c *Config) {
		c.PrivateNetworkKey = key
		c.Logger = slog.New(rec)
	})
	public := newTestHost(t, func(c *Config) { c.Logger = slog.New(pubRec) })
	stranger := newTestHost(t, func(c *Config) { c.PrivateNetworkKey = otherKey })
	friend := newTestHost(t, func(c *Config) { c.PrivateNetworkKey = key })

	const (
		noKeyWarn    = "without the cluster key"
		otherKeyWarn = "another cluster key"
		hasKeyWarn   = "a peer with a cluster key"
	)
	connect := func(from, to *Host) error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		return from.Connect(ctx, addrOf(t, to, ma.P_TCP))
	}
	waitLogged := func(rec recordLog, s string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for rec.count(s) == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	tests := []struct {
		name     string
		from, to *Host
		want     []string // in the dialer's error
		logged   string   // in the dialed side's WARN
		log      recordLog
	}{
		{name: "no key to key", from: public, to: keyed,
			want: []string{"probably", "no cluster key", "--cluster-key"}, logged: noKeyWarn, log: rec},
		{name: "other key to key", from: stranger, to: keyed,
			want: []string{"probably", "does not match", "--cluster-key"}, logged: otherKeyWarn, log: rec},
		{name: "key to no key", from: keyed, to: public,
			want: []string{"probably", "does not match", "--cluster-key"}, logged: hasKeyWarn, log: pubRec},
	}
	for _, tt := range tests {
		for attempt := range 3 {
			err := connect(tt.from, tt.to)
			t.Logf("%s, attempt %d: %v", tt.name, attempt, err)
			if err == nil {
				t.Fatalf("%s: Connect succeeded", tt.name)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s, attempt %d: Connect: %v\nwant it to say %q", tt.name, attempt, err, w)
				}
			}
		}
		waitLogged(tt.log, tt.logged)
		if n := tt.log.count(tt.logged); n != 1 {
			t.Errorf("%s: the dialed side logged %q %d times for 3 attempts in a row, want once", tt.name, tt.logged, n)
		}
	}
	if err := connect(friend, keyed); err != nil {
		t.Fatalf("same key: Connect: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := rec.count("cluster key"); n != 2 {
		t.Errorf("the keyed side logged %d key warnings, want 2 (the right key logs none)", n)
	}
}

// captureConn is a net.Conn that records what is written to it.
type captureConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *captureConn) Write(b []byte) (int, error) { return c.buf.Write(b) }

// TestKeyCheckerJudgesByteByByte feeds the checker what a dialer sends
// (the multistream header and a security proposal, through pnet when it
// has a key) one byte at a time, as libp2p may read it: a mismatch must be
// found by the first byte that shows it (libp2p can give up on garbage
// after a few), a match only once the whole header decrypted.
func TestKeyCheckerJudgesByteByByte(t *testing.T) {
	t.Parallel()
	_, key := writeSwarmKey(t)
	_, otherKey := writeSwarmKey(t)
	hello := append(append([]byte{}, multistreamHeader...), "\x0b/tls/1.0.0\n"...)
	const httpGet = "GET /_meshreg/v1/status HTTP/1.1\r\nHost: x\r\n\r\n"
	send := func(psk []byte) []byte {
		if string(psk) == "http" {
			return []byte(httpGet)
		}
		if psk == nil {
			return hello
		}
		c := &captureConn{}
		pc, err := pnet.NewProtectedConn(psk, c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.Write(hello); err != nil {
			t.Fatal(err)
		}
		return c.buf.Bytes()
	}
	tests := []struct {
		name          string
		ours, theirs  []byte
		want          verdict
		within, after int // judged after at most within bytes, at least after
	}{
		{name: "same key", ours: key, theirs: key, want: verdictOK, within: pnetNonceLen + len(multistreamHeader), after: pnetNonceLen + len(multistreamHeader)},
		{name: "no key to key", ours: key, want: verdictNoKey, within: len(multistreamHeader), after: len(multistreamHeader)},
		{name: "other key to key", ours: key, theirs: otherKey, want: verdictOtherKey, within: pnetNonceLen + len(multistreamHeader), after: pnetNonceLen + 1},
		{name: "key to no key", theirs: key, want: verdictHasKey, within: len(multistreamHeader), after: 1},
		{name: "no keys", want: verdictOK, within: len(multistreamHeader), after: len(multistreamHeader)},
		{name: "HTTP to no key", theirs: []byte("http"), want: verdictHTTP, within: len("DELETE "), after: len("GET ")},
		{name: "HTTP to key", ours: key, theirs: []byte("http"), want: verdictHTTP, within: len("DELETE "), after: len("GET ")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newKeyChecker(tt.ours, testLogger(t))
			wire := send(tt.theirs)
			for n := 1; n <= len(wire); n++ {
				v := k.judge(wire[:n])
				if v == verdictUnknown {
					continue
				}
				if v != tt.want || n > tt.within || n < tt.after {
					t.Errorf("judged %d after %d bytes, want %d after %d to %d bytes", v, n, tt.want, tt.after, tt.within)
				}
				return
			}
			t.Errorf("not judged after all %d bytes", len(wire))
		})
	}
}

// TestKeyWarningRateLimit: one WARN per remote IP and kind per minute.
func TestKeyWarningRateLimit(t *testing.T) {
	t.Parallel()
	rec := newRecordLog(testLogger(t).Handler())
	k := newKeyChecker(make([]byte, 32), slog.New(rec))
	now := time.Unix(1_000_000, 0)
	k.now = func() time.Time { return now }
	a := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000}
	a2 := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40001} // same host, new port
	b := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 2), Port: 40000}
	k.report(verdictNoKey, a)
	k.report(verdictNoKey, a2)
	k.report(verdictOtherKey, a) // another kind
	k.report(verdictNoKey, b)    // another remote
	if n := rec.count("cluster key"); n != 3 {
		t.Errorf("%d WARNs, want 3 (a twice is once)", n)
	}
	now = now.Add(keyWarnEvery - time.Second)
	k.report(verdictNoKey, a)
	if n := rec.count("cluster key"); n != 3 {
		t.Errorf("%d WARNs within the minute, want still 3", n)
	}
	now = now.Add(2 * time.Second)
	k.report(verdictNoKey, a)
	k.report(verdictOK, a) // a match is never logged
	if n := rec.count("cluster key"); n != 4 {
		t.Errorf("%d WARNs after the minute, want 4", n)
	}
}
