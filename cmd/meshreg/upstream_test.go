package main

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestUpstreamSettings: upstreams come from repeated --upstream flags, from
// MESHREG_UPSTREAM (comma-separated) or from the config file, where an item
// may be a mapping; `serve --check` prints them in the flag's form, which
// reads back; a bad entry stops the start with an error naming it.
func TestUpstreamSettings(t *testing.T) {
	want := []string{"docker.io=https://registry-1.docker.io;revalidate=10m0s;allow=library/*;allow=bitnami/**",
		"127.0.0.1:5999=http://127.0.0.1:5999;skip-verify"}
	check := func(t *testing.T, out string) {
		t.Helper()
		var got struct {
			Upstream []string `json:"upstream"`
		}
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Upstream, want) {
			t.Fatalf("serve --check prints upstream %q, want %q", got.Upstream, want)
		}
	}
	t.Run("flags", func(t *testing.T) {
		clearMeshregEnv(t)
		out, err := runCheck(t, "--upstream", "docker.io=https://registry-1.docker.io;revalidate=10m;allow=library/*;allow=bitnami/**",
			"--upstream", "127.0.0.1:5999=http://127.0.0.1:5999;skip-verify")
		if err != nil {
			t.Fatal(err)
		}
		check(t, out)
	})
	t.Run("environment", func(t *testing.T) {
		clearMeshregEnv(t)
		t.Setenv("MESHREG_UPSTREAM", strings.Join(want, ","))
		out, err := runCheck(t)
		if err != nil {
			t.Fatal(err)
		}
		check(t, out)
	})
	t.Run("config file mappings", func(t *testing.T) {
		clearMeshregEnv(t)
		conf := writeFile(t, filepath.Join(t.TempDir(), "meshreg.yaml"), `upstreams:
  - name: docker.io
    url: https://registry-1.docker.io
    revalidate: 10m
    allow: [library/*, bitnami/**]
  - 127.0.0.1:5999=http://127.0.0.1:5999;skip-verify
`)
		out, err := runCheck(t, "--config", conf)
		if err != nil {
			t.Fatal(err)
		}
		check(t, out)
		// What --check prints reads back as a config file.
		again, err := runCheck(t, "--config", writeFile(t, filepath.Join(t.TempDir(), "again.yaml"), out))
		if err != nil {
			t.Fatalf("serve --check output does not read back: %v", err)
		}
		check(t, again)
	})
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no URL":             {[]string{"--upstream", "docker.io"}, `--upstream "docker.io": want NAME=URL`},
		"bad URL":            {[]string{"--upstream", "docker.io=ftp://x"}, "--upstream docker.io: URL"},
		"twice":              {[]string{"--upstream", "a.io=https://a", "--upstream", "a.io=https://b"}, "--upstream a.io is given twice"},
		"unknown default":    {[]string{"--upstream", "a.io=https://a", "--upstream-default", "b.io"}, `--upstream-default "b.io" is not one of the --upstream names (a.io)`},
		"credentials alone":  {[]string{"--upstream-credentials", "/x.json"}, "--upstream-credentials needs at least one --upstream"},
		"revalidate too low": {[]string{"--upstream", "a.io=https://a;revalidate=1ms"}, "--upstream a.io: revalidate=1ms is out of range"},
	} {
		t.Run(name, func(t *testing.T) {
			clearMeshregEnv(t)
			_, err := runCheck(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("serve --check %q = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}
