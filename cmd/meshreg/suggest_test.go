package main

import "testing"

func TestNearest(t *testing.T) {
	keys := []string{"data-dir", "listen", "p2p-listen", "join", "join-token", "repair-interval", "log-level"}
	for _, tc := range []struct {
		word, want string
		ok         bool
	}{
		{"data_dir", "data-dir", true},
		{"MESHREG_DATA_DIR", "data-dir", true},
		{"Data-Dir", "data-dir", true},
		{"listen-addr", "listen", true}, // 5 edits, but a prefix
		{"p2p_listen", "p2p-listen", true},
		{"lsiten", "listen", true},
		{"repair-intervall", "repair-interval", true},
		{"joins", "join", true},
		{"loglevel", "log-level", true},
		{"storage", "", false},
		{"dir", "", false},
	} {
		got, ok := nearest(tc.word, keys)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("nearest(%q) = %q, %v; want %q, %v", tc.word, got, ok, tc.want, tc.ok)
		}
	}
}
