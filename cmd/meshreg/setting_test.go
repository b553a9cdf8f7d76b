package main

import (
	"fmt"
	"io"
	"reflect"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestEverySettingHasItsOwnField gives each setting of serve, alone, a
// value other than its default on the command line and reads the flags
// back into a serveConfig: what `serve --check` would print changes for
// that setting and for no other. So every line of serveConfig.settings
// points at a field of its own, and the flag it builds reaches that field.
// (Validation is left out: it is TestServeCheck*'s.)
func TestEverySettingHasItsOwnField(t *testing.T) {
	// A value of each flag type that no default equals; text settings with
	// a parser of their own get one it accepts.
	byType := func(f cli.Flag) string {
		switch f.(type) {
		case *cli.DurationFlag:
			return "7m7s"
		case *cli.IntFlag:
			return "7"
		case *cli.Int64Flag, *cli.Uint64Flag:
			return "7777"
		case *cli.StringSliceFlag:
			return "/seven"
		}
		return "seven"
	}
	special := map[string]string{"min-free-disk": "7KiB", "scrub-rate": "7KiB", "max-disk": "7MiB", "max-disk-low": "7KiB", "log-level": "debug", "log-format": "json", "upstream-fetch": "region",
		"upstream":         "seven.example=https://seven.example",
		"max-raft-members": "5"} // 7 is its default

	shown := func(args ...string) map[string]any {
		t.Helper()
		got := map[string]any{}
		app := &cli.App{
			Flags:  serveFlags(),
			Writer: io.Discard, ErrWriter: io.Discard,
			Action: func(c *cli.Context) error {
				cfg := defaultServeConfig()
				for _, s := range cfg.settings() {
					if err := s.read(c); err != nil {
						return err
					}
				}
				for _, s := range cfg.settings() {
					got[s.name] = s.show()
				}
				return nil
			},
		}
		if err := app.Run(append([]string{"serve"}, args...)); err != nil {
			t.Fatalf("serve %v: %v", args, err)
		}
		return got
	}

	clearMeshregEnv(t)
	defaults := shown()
	for _, f := range serveFlags() {
		name := f.Names()[0]
		if name == configFlag.Name {
			continue
		}
		v, ok := special[name]
		if !ok {
			v = byType(f)
		}
		t.Run(name, func(t *testing.T) {
			got := shown("--"+name, v)
			if reflect.DeepEqual(got[name], defaults[name]) {
				t.Errorf("--%s %s: serve --check would still print %v, its default", name, v, got[name])
			}
			for k := range defaults {
				if k != name && !reflect.DeepEqual(got[k], defaults[k]) {
					t.Errorf("--%s %s changed %s too: %v, was %v", name, v, k, got[k], defaults[k])
				}
			}
		})
	}
}

// TestSettingsAreNamedOnce: the environment variable of every setting is
// its flag name as MESHREG_NAME (the only place that name is spelt), and
// no name is declared twice.
func TestSettingsAreNamedOnce(t *testing.T) {
	seen := map[string]bool{}
	for _, f := range serveFlags() {
		name := f.Names()[0]
		if seen[name] {
			t.Errorf("--%s is declared twice", name)
		}
		seen[name] = true
		df := f.(cli.DocGenerationFlag)
		if got, want := fmt.Sprint(df.GetEnvVars()), fmt.Sprint(envVars(name)); got != want {
			t.Errorf("--%s: environment %s, want %s", name, got, want)
		}
	}
}
