package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeCheckNotifications: --notifications (or MESHREG_NOTIFICATIONS)
// is checked by `serve --check` as by serve: a bad file is refused with
// what is wrong, never with its secret.
func TestServeCheckNotifications(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.yaml"), filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(good, []byte("endpoints:\n  - {name: ci, url: 'http://127.0.0.1:9/hook', secret: s3cret}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("endpoints:\n  - {name: ci, url: 'ftp://127.0.0.1:9/hook', secret: s3cret}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{name: "flag", args: []string{"--notifications", good}},
		{name: "environment", env: map[string]string{"MESHREG_NOTIFICATIONS": good}},
		{name: "bad file", args: []string{"--notifications", bad}, want: "endpoint 1 (ci): url: want an http:// or https:// URL"},
		{name: "missing file", args: []string{"--notifications", filepath.Join(dir, "none.yaml")}, want: "--notifications"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			out, err := runCheck(t, tc.args...)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
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
			if got["notifications"] != good || strings.Contains(out, "s3cret") {
				t.Errorf("printed notifications %v, want %s (and no secret)", got["notifications"], good)
			}
		})
	}
}
