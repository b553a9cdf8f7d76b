package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestConfigFileRefusesUnknownKeys: a key of the --config file that is no
// flag of serve stops `serve --check` (and `serve`) with an error naming
// the key, the file and line, and the nearest valid key; every such key
// is named at once.
func TestConfigFileRefusesUnknownKeys(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{name: "env spelling", yaml: "data_dir: /var/lib/meshreg\n",
			want: []string{`unknown key "data_dir" in `, `meshreg.yaml (line 1): did you mean "data-dir"?`}},
		{name: "a longer name", yaml: "voters: 3\nlisten-addr: 0.0.0.0:5000\n",
			want: []string{`unknown key "listen-addr"`, `(line 2): did you mean "listen"?`}},
		{name: "environment variable as key", yaml: "MESHREG_P2P_LISTEN: /ip4/0.0.0.0/tcp/4001\n",
			want: []string{`unknown key "MESHREG_P2P_LISTEN"`, `did you mean "p2p-listen"?`}},
		{name: "nothing near", yaml: "storage: s3\n",
			want: []string{`unknown key "storage"`, "the keys are the flag names of meshreg serve --help"}},
		{name: "every unknown key at once", yaml: "data_dir: d\nlog_level: debug\nvoters: 3\n",
			want: []string{`"data_dir"`, `did you mean "data-dir"?`, `"log_level"`, `did you mean "log-level"?`}},
		{name: "a key given twice", yaml: "voters: 3\nvoters: 5\n",
			want: []string{`meshreg.yaml, line 2: key "voters" is given twice (first on line 1)`}},
		{name: "check is no key", yaml: "check: true\n",
			want: []string{`unknown key "check"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			conf := writeFile(t, filepath.Join(t.TempDir(), "meshreg.yaml"), tc.yaml)
			out, err := runCheck(t, "--config", conf)
			if err == nil {
				t.Fatalf("serve --check accepted it; printed:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestServeRefusesUnknownConfigKey: `serve` itself (not only --check)
// stops on an unknown key before it opens anything. The node it would
// otherwise start is bounded by a 10 s context.
func TestServeRefusesUnknownConfigKey(t *testing.T) {
	clearMeshregEnv(t)
	dir := t.TempDir()
	conf := writeFile(t, filepath.Join(dir, "meshreg.yaml"), "data-dir: "+filepath.Join(dir, "data")+"\nlisten: 127.0.0.1:0\np2p-listen: [/ip4/127.0.0.1/tcp/0]\nshutdown-timeout: 1s\nlog-level: error\nzone_: a\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	err := app.RunContext(ctx, []string{"meshreg", "serve", "--config", conf})
	if err == nil || !strings.Contains(err.Error(), `unknown key "zone_"`) || !strings.Contains(err.Error(), `did you mean "zone"?`) {
		t.Fatalf("serve with an unknown config key: %v", err)
	}
}

// TestConfigFileValues: a single value is accepted for a list key (and a
// list, flow or block), a list is refused for a single-value key, and a
// value the flag cannot parse is named with its file, line and what it
// needs.
func TestConfigFileValues(t *testing.T) {
	good := []struct {
		name, yaml string
		key        string
		want       any
	}{
		{name: "scalar for a list", yaml: "p2p-listen: /ip4/127.0.0.1/tcp/4101\n", key: "p2p-listen", want: []any{"/ip4/127.0.0.1/tcp/4101"}},
		{name: "flow list", yaml: "p2p-listen: [/ip4/127.0.0.1/tcp/4101, /ip4/127.0.0.1/udp/4101/quic-v1]\n", key: "p2p-listen",
			want: []any{"/ip4/127.0.0.1/tcp/4101", "/ip4/127.0.0.1/udp/4101/quic-v1"}},
		{name: "block list", yaml: "join:\n  - http://10.0.0.1:5000\n  - http://10.0.0.2:5000\n", key: "join",
			want: []any{"http://10.0.0.1:5000", "http://10.0.0.2:5000"}},
		{name: "scalar join", yaml: "join: http://10.0.0.1:5000\n", key: "join", want: []any{"http://10.0.0.1:5000"}},
		{name: "empty list without a default", yaml: "join: []\n", key: "join", want: []any{}},
		{name: "a YAML number for a string", yaml: "zone: 1\n", key: "zone", want: "1"},
		{name: "empty file", yaml: "# nothing set\n", key: "voters", want: 3.0},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			conf := writeFile(t, filepath.Join(t.TempDir(), "meshreg.yaml"), tc.yaml)
			out, err := runCheck(t, "--config", conf)
			if err != nil {
				t.Fatalf("serve --check: %v", err)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got[tc.key], tc.want) {
				t.Errorf("%s = %#v, want %#v", tc.key, got[tc.key], tc.want)
			}
		})
	}
	bad := []struct {
		name, yaml string
		want       []string
	}{
		{name: "duration without a unit", yaml: "voters: 3\nrepair-interval: 5\n",
			want: []string{`meshreg.yaml, line 2: repair-interval "5": a duration needs a unit, e.g. 5s, 10m, 1h`}},
		{name: "not a number", yaml: "voters: three\n", want: []string{`meshreg.yaml, line 1: voters "three": not a whole number`}},
		{name: "list for a single value", yaml: "listen: [127.0.0.1:5000, 127.0.0.1:5001]\n",
			want: []string{`meshreg.yaml, line 1: listen: takes one value, not a list`}},
		{name: "mapping", yaml: "p2p:\n  listen: /ip4/0.0.0.0/tcp/4001\n", want: []string{`unknown key "p2p"`}},
		{name: "mapping for a value", yaml: "listen:\n  host: 0.0.0.0\n", want: []string{`listen: wants a value, not a mapping`}},
		{name: "empty list for a key with a default", yaml: "p2p-listen: []\n", want: []string{"p2p-listen: an empty list"}},
		{name: "not a mapping", yaml: "- listen: 1\n", want: []string{"meshreg.yaml, line 1: the file must map flag names to values"}},
		{name: "two documents", yaml: "voters: 3\n---\nvoters: 5\n", want: []string{"more than one YAML document"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			conf := writeFile(t, filepath.Join(t.TempDir(), "meshreg.yaml"), tc.yaml)
			out, err := runCheck(t, "--config", conf)
			if err == nil {
				t.Fatalf("serve --check accepted it; printed:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestConfigFileYAMLError: a file that is not YAML gets one message with
// the file and the line of the mistake, not the loader's wrapping around
// yaml's own (whose line is 0-based for some errors).
func TestConfigFileYAMLError(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		line int
	}{
		{"voters: 3\nlisten: [127.0.0.1:5000\nzone: a\n", 2}, // the list opened on line 2 is not closed
		{"voters: 3\nzone: a\n- x\n", 3},
		{"voters: 3\n  zone: a\n", 2},
		{"voters: 3\nzone: \"a\n", 2},
		{"voters: 3\njoin:\n  - a\n zone: b\n", 4},
	} {
		clearMeshregEnv(t)
		conf := writeFile(t, filepath.Join(t.TempDir(), "meshreg.yaml"), tc.yaml)
		_, err := runCheck(t, "--config", conf)
		if err == nil {
			t.Errorf("serve --check accepted %q, which is not YAML", tc.yaml)
			continue
		}
		msg := err.Error()
		if want := fmt.Sprintf("%s, line %d: not valid YAML: ", conf, tc.line); !strings.HasPrefix(msg, want) {
			t.Errorf("%q: error %q does not start with %q", tc.yaml, msg, want)
		}
		for _, wrap := range []string{"inner error", "Unable to", "yaml: ", "\n"} {
			if strings.Contains(msg, wrap) {
				t.Errorf("error %q holds %q", msg, wrap)
			}
		}
	}
}

// TestCheckOutputKeysAreTheFlags: `serve --check` prints every setting
// under its flag's name and nothing else, so that its output is a complete
// --config file and every key of it is one the loader accepts.
func TestCheckOutputKeysAreTheFlags(t *testing.T) {
	clearMeshregEnv(t)
	out, err := runCheck(t, "--config", writeFile(t, filepath.Join(t.TempDir(), "meshreg.yaml"), "voters: 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	flags := map[string]bool{}
	for _, f := range serveFlags() {
		name := f.Names()[0]
		flags[name] = true
		if _, ok := got[name]; !ok {
			t.Errorf("serve --check does not print --%s (settings are declared in serveConfig.settings)", name)
		}
	}
	for k := range got {
		if !flags[k] {
			t.Errorf("serve --check prints %q, which is no flag of serve", k)
		}
	}
}

// TestMisspeltEnvironmentVariableWarns: a MESHREG_* variable close to a
// setting's name gets a warning naming the right one; one close to none
// (Kubernetes' service variables) does not.
func TestMisspeltEnvironmentVariableWarns(t *testing.T) {
	clearMeshregEnv(t)
	t.Setenv("MESHREG_DATADIR", "/var/lib/meshreg")
	t.Setenv("MESHREG_SERVICE_HOST", "10.0.0.1")
	t.Setenv("MESHREG_PORT_5000_TCP", "tcp://10.0.0.1:5000")
	var errOut bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, &errOut
	if err := app.Run([]string{"meshreg", "serve", "--check"}); err != nil {
		t.Fatal(err)
	}
	want := "meshreg: warning: MESHREG_DATADIR is not a setting of meshreg serve and is ignored: did you mean MESHREG_DATA_DIR?\n"
	if errOut.String() != want {
		t.Errorf("stderr:\n%q\nwant\n%q", errOut.String(), want)
	}
}

// TestCheckOutputWithATokenDoesNotReadBackAsOne: `serve --check` prints
// "(set)" for a join token; that output used as a --config file is
// refused, saying to put the token itself there, rather than joining with
// the token "(set)".
func TestCheckOutputWithATokenDoesNotReadBackAsOne(t *testing.T) {
	clearMeshregEnv(t)
	dir := t.TempDir()
	out, err := runCheck(t, "--join-token", "mrj1.secret-token-value-0123456789", "--join", "http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = runCheck(t, "--config", writeFile(t, filepath.Join(dir, "meshreg.yaml"), out))
	if err == nil || !strings.Contains(err.Error(), `join-token "(set)"`) || !strings.Contains(err.Error(), "the token itself") {
		t.Errorf("serve --check output with a token read back: %v", err)
	}
}
