package token

import "testing"

// BenchmarkVerify is the cost of a bearer token on /v2/ once verified
// (remembered); BenchmarkVerifyFirst the first time (the signature check).
func BenchmarkVerify(b *testing.B) {
	f := newFixture(b, Config{})
	tok := f.issue(b, "alice", "repository:team/app:pull").Token
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.svc.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyFirst(b *testing.B) {
	f := newFixture(b, Config{})
	tok := f.issue(b, "alice", "repository:team/app:pull").Token
	b.ReportAllocs()
	for b.Loop() {
		clear(f.svc.verified)
		if _, err := f.svc.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
