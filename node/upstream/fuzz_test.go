package upstream

import (
	"strings"
	"testing"
	"time"
)

func FuzzParseCredentials(f *testing.F) {
	f.Add(`{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}`)
	f.Add(`{"auths":{"ghcr.io":{"username":"u","password":"p"}}}`)
	f.Add(`{"auths":{"":{}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseCredentials([]byte(s))
		if err != nil {
			if m != nil {
				t.Fatal("entries with an error")
			}
			return
		}
		for k := range m {
			if k != canonicalRegistry(k) {
				t.Fatalf("key %q is not canonical", k)
			}
		}
	})
}

func FuzzParseHeaders(f *testing.F) {
	f.Add("bytes 0-9/10", "120", "100;w=21600")
	f.Add("bytes 5-4/3", "Wed, 21 Oct 2015 07:28:00 GMT", "-1")
	f.Fuzz(func(t *testing.T, cr, retryAfter, rl string) {
		if start, total, ok := parseContentRange(cr); ok && (start < 0 || (total != -1 && total <= start)) {
			t.Fatalf("%q: start %d total %d", cr, start, total)
		}
		if d, ok := parseRetryAfter(retryAfter, time.Unix(0, 0)); ok && !strings.Contains(retryAfter, ",") && d < 0 {
			t.Fatalf("%q: negative %v from seconds", retryAfter, d)
		}
		if n, ok := parseRateLimit(rl); ok && n < 0 {
			t.Fatalf("%q: %d", rl, n)
		}
	})
}
