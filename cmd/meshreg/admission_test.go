package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeCheckJoinToken: the join token comes from the flag, the
// environment or the config file, and --check never prints it; the
// stabilization time is read; --bootstrap-expect without the cluster key
// needs a shared token of at least 16 characters.
func TestServeCheckJoinToken(t *testing.T) {
	clearMeshregEnv(t)
	dir := t.TempDir()
	const secret = "mrj1.secret-token-value-0123456789"
	conf := writeFile(t, filepath.Join(dir, "meshreg.yaml"), "join-token: "+secret+"\nstabilization-time: 3s\n")
	for name, args := range map[string][]string{
		"flag":   {"--join-token", secret},
		"config": {"--config", conf},
	} {
		out, err := runCheck(t, append(args, "--data-dir", filepath.Join(dir, "d"), "--join", "http://127.0.0.1:1")...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Contains(out, "secret-token") {
			t.Errorf("%s: --check printed the token:\n%s", name, out)
		}
		var got map[string]any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if got["join-token"] != "(set)" {
			t.Errorf("%s: join-token = %v, want (set)", name, got["join-token"])
		}
	}
	t.Setenv("MESHREG_JOIN_TOKEN", secret)
	out, err := runCheck(t, "--config", conf, "--data-dir", filepath.Join(dir, "d"))
	if err != nil || !strings.Contains(out, `"stabilization-time": "3s"`) || !strings.Contains(out, `"join-token": "(set)"`) {
		t.Errorf("env + config: %v\n%s", err, out)
	}

	join := []string{"--data-dir", filepath.Join(dir, "d"), "--join", "http://127.0.0.1:1", "--bootstrap-expect", "3"}
	t.Setenv("MESHREG_JOIN_TOKEN", "")
	if _, err := runCheck(t, join...); err == nil || !strings.Contains(err.Error(), "--bootstrap-expect needs --cluster-key") {
		t.Errorf("--bootstrap-expect with no key and no token: %v, want refused", err)
	}
	if _, err := runCheck(t, append(join, "--join-token", "short")...); err == nil {
		t.Error("--bootstrap-expect with a 5-character shared token accepted")
	}
	if _, err := runCheck(t, append(join, "--join-token", "a-long-enough-shared-secret")...); err != nil {
		t.Errorf("--bootstrap-expect with a shared token: %v", err)
	}
}
