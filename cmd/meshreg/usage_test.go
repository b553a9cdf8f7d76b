package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestUsageErrorsAreOneLine: a flag mistake, on the command line or in a
// MESHREG_* variable, gets one message naming the flag, the value and
// what it needs, pointing at --help, and no help text.
func TestUsageErrorsAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{name: "duration without a unit", args: []string{"serve", "--repair-interval", "5"},
			want: []string{`--repair-interval "5": a duration needs a unit, e.g. 5s, 10m, 1h`, "see meshreg serve --help"}},
		{name: "not a duration", args: []string{"serve", "--peer-idle-timeout=soon"},
			want: []string{`--peer-idle-timeout "soon": not a duration`}},
		{name: "not a number", args: []string{"serve", "--voters", "three"},
			want: []string{`--voters "three": not a whole number`}},
		{name: "duration without a unit from the environment", env: map[string]string{"MESHREG_REPAIR_INTERVAL": "5"}, args: []string{"serve", "--check"},
			want: []string{`MESHREG_REPAIR_INTERVAL "5" (--repair-interval): a duration needs a unit`}},
		{name: "unknown flag", args: []string{"serve", "--data_dir", "x"},
			want: []string{"unknown flag --data_dir (did you mean --data-dir?)", "see meshreg serve --help"}},
		{name: "missing value", args: []string{"serve", "--listen"},
			want: []string{"--listen needs a value"}},
		{name: "an argument, after which flags are not parsed", args: []string{"serve", "--check", "data", "--data-dir", "d"},
			want: []string{`meshreg serve takes no arguments, got ["data" "--data-dir" "d"]`}},
		{name: "unknown flag of a subcommand", args: []string{"cluster", "members", "--nod", "x"},
			want: []string{"unknown flag --nod (did you mean --node?)", "see meshreg cluster members --help"}},
		{name: "unknown command", args: []string{"serv", "--check"},
			want: []string{`unknown command "serv" (did you mean "serve"?); see meshreg --help`}},
		{name: "unknown subcommand", args: []string{"cluster", "member"},
			want: []string{`unknown command "member" (did you mean "members"?); see meshreg cluster --help`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearMeshregEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var out, errOut bytes.Buffer
			app := newApp()
			app.Writer, app.ErrWriter = &out, &errOut
			err := app.Run(append([]string{"meshreg"}, tc.args...))
			if err == nil {
				t.Fatalf("meshreg %v succeeded", tc.args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is more than one line: %q", err)
			}
			if printed := out.String() + errOut.String(); printed != "" {
				t.Errorf("printed more than the error:\n%s", printed)
			}
		})
	}
}

// TestCommandsWithoutArgumentsShowHelp: meshreg, meshreg cluster, meshreg mirror and
// meshreg token with nothing more print their help and succeed.
func TestCommandsWithoutArgumentsShowHelp(t *testing.T) {
	for _, args := range [][]string{{}, {"cluster"}, {"token"}, {"mirror"}} {
		var out bytes.Buffer
		app := newApp()
		app.Writer, app.ErrWriter = &out, &out
		if err := app.Run(append([]string{"meshreg"}, args...)); err != nil || !strings.Contains(out.String(), "USAGE:") {
			t.Errorf("meshreg %v: %v\n%s", args, err, out.String())
		}
	}
}
