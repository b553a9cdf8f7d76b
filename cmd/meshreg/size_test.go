package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "256MiB", want: 256 << 20},
		{in: "1.5GiB", want: 3 << 29},
		{in: "500MB", want: 500e6},
		{in: "64M", want: 64 << 20},
		{in: " 2 GiB ", want: 2 << 30},
		{in: "lots", bad: true},
		{in: "-1MiB", bad: true},
		{in: "", bad: true},
		{in: "99999999TiB", bad: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize("min-free-disk", tc.in)
			if tc.bad {
				if err == nil || !strings.Contains(err.Error(), "--min-free-disk") {
					t.Fatalf("parseSize(%q) = %d, %v; want an error naming the flag", tc.in, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
			if back, err := parseSize("x", formatSize(got)); err != nil || back != got {
				t.Fatalf("formatSize(%d) = %q reads back as %d, %v", got, formatSize(got), back, err)
			}
		})
	}
}

func TestServeCheckDiskFlags(t *testing.T) {
	clearMeshregEnv(t)
	out, err := runCheck(t, "--data-dir", t.TempDir(), "--min-free-disk", "1GiB", "--scrub-rate", "0", "--scrub-interval", "1h")
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got["min-free-disk"] != "1GiB" || got["scrub-rate"] != "0" || got["scrub-interval"] != "1h0m0s" {
		t.Fatalf("--check printed min-free-disk %v, scrub-rate %v, scrub-interval %v", got["min-free-disk"], got["scrub-rate"], got["scrub-interval"])
	}
	for _, args := range [][]string{
		{"--min-free-disk", "lots"},
		{"--scrub-rate", "fast"},
		{"--scrub-interval", "0s"},
	} {
		clearMeshregEnv(t)
		if _, err := runCheck(t, args...); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(args[0], "--")) {
			t.Errorf("serve --check %v: err %v, want one naming the flag", args, err)
		}
	}
}
