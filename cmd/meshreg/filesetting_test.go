package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fileSetting is a serve setting that names a file `serve --check` reads
// and validates as serve would (--rate-limits, --notifications, ...).
type fileSetting struct {
	flag, env string
	good, bad string // file contents
	badSays   string // what the error for bad says
	secret    string // a value of the files that no output may show ("": none)
}

// checkFileSetting runs `serve --check` with the setting given by flag and
// by environment (accepted and printed as the file's path), with a bad
// file (refused with what is wrong) and with a missing one (refused naming
// the flag); the secret appears in no output.
func checkFileSetting(t *testing.T, s fileSetting) {
	t.Helper()
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	for name, body := range map[string]string{good: s.good, bad: s.bad} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	leaks := func(text string) bool { return s.secret != "" && strings.Contains(text, s.secret) }
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "flag", args: []string{"--" + s.flag, good}},
		{name: "environment", env: map[string]string{s.env: good}},
		{name: "bad file", args: []string{"--" + s.flag, bad}, want: s.badSays},
		{name: "missing file", args: []string{"--" + s.flag, filepath.Join(dir, "none.yaml")}, want: "--" + s.flag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, err := runCheck(t, tc.args...)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || leaks(err.Error()) {
					t.Fatalf("serve --check: %v, want an error saying %q (and no secret); printed:\n%s", err, tc.want, out)
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
			if got[s.flag] != good || leaks(out) {
				t.Errorf("printed %s %v, want %s (and no secret)", s.flag, got[s.flag], good)
			}
		})
	}
}

// TestServeCheckRateLimits: --rate-limits (or MESHREG_RATE_LIMITS) is read
// by `serve --check` as by serve, without authentication too, and a bad
// file is refused with its line.
func TestServeCheckRateLimits(t *testing.T) {
	checkFileSetting(t, fileSetting{flag: "rate-limits", env: "MESHREG_RATE_LIMITS",
		good:    "clients: {requests-per-second: 50, burst: 100}\n",
		bad:     "clients: {requests-per-second: 50, burst: 100}\nrepositories:\n  - {repos: [\"ci/**\"], requests-per-second: -1, burst: 1}\n",
		badSays: "line 3: requests-per-second -1 is out of range"})
}

// TestServeCheckNotifications: --notifications (or MESHREG_NOTIFICATIONS)
// is checked by `serve --check` as by serve: a bad file is refused with
// what is wrong, never with its secret.
func TestServeCheckNotifications(t *testing.T) {
	checkFileSetting(t, fileSetting{flag: "notifications", env: "MESHREG_NOTIFICATIONS",
		good:    "endpoints:\n  - {name: ci, url: 'http://127.0.0.1:9/hook', secret: s3cret}\n",
		bad:     "endpoints:\n  - {name: ci, url: 'ftp://127.0.0.1:9/hook', secret: s3cret}\n",
		badSays: "endpoint 1 (ci): url: want an http:// or https:// URL", secret: "s3cret"})
}
