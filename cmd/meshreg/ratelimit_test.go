package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeCheckRateLimits: --rate-limits (or MESHREG_RATE_LIMITS) is read
// by `serve --check` as by serve, without authentication too, and a bad
// file is refused with its line.
func TestServeCheckRateLimits(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("clients: {requests-per-second: 50, burst: 100}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("clients: {requests-per-second: 50, burst: 100}\nrepositories:\n  - {repos: [\"ci/**\"], requests-per-second: -1, burst: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "flag", args: []string{"--rate-limits", good}},
		{name: "environment", env: map[string]string{"MESHREG_RATE_LIMITS": good}},
		{name: "bad file", args: []string{"--rate-limits", bad}, want: "line 3: requests-per-second -1 is out of range"},
		{name: "missing file", args: []string{"--rate-limits", filepath.Join(dir, "none.yaml")}, want: "--rate-limits"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, err := runCheck(t, tc.args...)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("serve --check: %v, want an error saying %q; printed:\n%s", err, tc.want, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("serve --check: %v\n%s", err, out)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("serve --check printed no JSON: %v\n%s", err, out)
			}
			if got["rate-limits"] != good {
				t.Errorf("printed rate-limits %v, want %s", got["rate-limits"], good)
			}
		})
	}
}
