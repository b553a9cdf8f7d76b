package main

import (
	"bytes"
	"io"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
)

// TestServeCheckRefusesOutOfRangeFlags gives every duration and size flag
// of `meshreg serve` values that cannot work (zero, negative, too small for
// a ticker, absurdly large): `serve --check` refuses each with a message
// that names the flag and the range it accepts.
func TestServeCheckRefusesOutOfRangeFlags(t *testing.T) {
	bad := map[string][]string{
		"repair-interval":         {"0s", "-1s", "3ns", "9999h"},
		"peer-idle-timeout":       {"0s", "-5s", "1ns", "2h"},
		"reprovide-interval":      {"0s", "-1h", "1ns", "48h"},
		"dead-server-timeout":     {"0s", "-1m", "2ns", "10000h"},
		"upload-idle-timeout":     {"0s", "-1s", "3ns", "1ms", "1000h"},
		"body-idle-timeout":       {"0s", "-1s", "3ns", "25h"},
		"client-idle-timeout":     {"0s", "-1s", "3ns", "25h"},
		"snapshot-interval":       {"0s", "-1s", "3ns", "1000h"},
		"shutdown-timeout":        {"0s", "-1s", "3ns", "100h"},
		"max-manifest-size":       {"0", "-1", "10", "1099511627776"},
		"max-uploads":             {"0", "-1", "100000000"},
		"max-writes-per-client":   {"0", "-1", "1000000"},
		"max-uploads-per-client":  {"0", "-1", "2000"}, // above --max-uploads (1000)
		"voters":                  {"0", "-3", "1000"},
		"max-raft-members":        {"-1", "1000"},
		"replicas":                {"0", "-1", "100000"},
		"bootstrap-expect":        {"-1", "100000"},
		"snapshot-threshold":      {"0", "18446744073709551615"},
		"trailing-logs":           {"0", "18446744073709551615"},
		"stabilization-time":      {"-1s", "2h"},
		"scrub-interval":          {"0s", "-1s", "100000h"},
		"auth-token-ttl":          {"0s", "-1s", "59s", "25h"},
		"auth-token-key-rotation": {"0s", "-1s", "4m", "9000h"}, // below --auth-token-ttl (5m)
		"gc-interval":             {"-1s", "100000h"},
		"gc-grace":                {"-1s", "100000h"},
		"max-disk":                {"2000TiB"},
		"max-disk-low":            {"1KiB"}, // above --max-disk (0)
	}
	// Every numeric flag must be in the table, so a new one cannot skip
	// validation.
	for _, f := range serveFlags() {
		name := f.Names()[0]
		switch f.(type) {
		case *altsrc.DurationFlag, *altsrc.IntFlag, *altsrc.Int64Flag, *altsrc.Uint64Flag, *altsrc.Float64Flag,
			*cli.DurationFlag, *cli.IntFlag, *cli.Int64Flag, *cli.Uint64Flag, *cli.Float64Flag:
		default:
			continue
		}
		if _, ok := bad[name]; !ok {
			t.Errorf("--%s is a numeric flag of serve with no out-of-range values in this table", name)
		}
	}
	for name, values := range bad {
		for _, v := range values {
			t.Run(name+"="+v, func(t *testing.T) {
				clearMeshregEnv(t)
				args := []string{"--" + name, v}
				if name == "bootstrap-expect" {
					args = append(args, "--join", "http://127.0.0.1:5001")
				}
				out, err := runCheck(t, args...)
				if err == nil {
					t.Fatalf("serve --check --%s %s was accepted; printed:\n%s", name, v, out)
				}
				if !strings.Contains(err.Error(), "--"+name) || !strings.Contains(err.Error(), " to ") {
					t.Errorf("error %q does not name --%s and its range", err, name)
				}
			})
		}
	}
}

// TestServeCheckAcceptsRangeEdges checks that the ends of the ranges, and
// the defaults, are accepted.
func TestServeCheckAcceptsRangeEdges(t *testing.T) {
	clearMeshregEnv(t)
	for _, args := range [][]string{
		nil,
		{"--upload-idle-timeout", "1s", "--client-idle-timeout", "10ms", "--body-idle-timeout", "1h", "--shutdown-timeout", "1s"},
		{"--max-uploads", "1", "--max-uploads-per-client", "1", "--reprovide-interval", "47h", "--peer-idle-timeout", "100ms"},
		{"--max-manifest-size", "1024", "--snapshot-interval", "100ms", "--dead-server-timeout", "1s", "--repair-interval", "100ms"},
	} {
		if out, err := runCheck(t, args...); err != nil {
			t.Errorf("serve --check %v: %v\n%s", args, err, out)
		}
	}
}

// TestServeFlagsAreGrouped: every setting of `meshreg serve` sits in one
// of the six categories of its --help, and every flag that takes a value
// names it with one placeholder style: a backquoted UPPERCASE word in its
// usage (`--listen HOST:PORT`, `--repair-interval DURATION`).
func TestServeFlagsAreGrouped(t *testing.T) {
	categories := map[string]bool{"API": true, "Cluster": true, "P2P": true, "Storage": true, "Limits": true, "Logging": true}
	placeholder := regexp.MustCompile("`[A-Z][A-Z0-9_:]*`")
	for _, f := range append(serveFlags(), checkFlag) {
		name := f.Names()[0]
		if name == "config" || name == "check" {
			continue // where settings come from and what to do with them: shown first, with --help
		}
		cf, ok := f.(cli.CategorizableFlag)
		if !ok || !categories[cf.GetCategory()] {
			got := ""
			if ok {
				got = cf.GetCategory()
			}
			t.Errorf("--%s has category %q, want one of API, Cluster, P2P, Storage, Limits, Logging", name, got)
		}
		df, ok := f.(cli.DocGenerationFlag)
		if !ok {
			t.Errorf("--%s: not a documented flag", name)
			continue
		}
		if df.TakesValue() && !placeholder.MatchString(df.GetUsage()) {
			t.Errorf("--%s: usage %q has no backquoted UPPERCASE placeholder", name, df.GetUsage())
		}
	}
	var help bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &help, io.Discard
	if err := app.Run([]string{"meshreg", "serve", "--help"}); err != nil {
		t.Fatal(err)
	}
	for c := range categories {
		if !strings.Contains(help.String(), "\n   "+c+"\n") {
			t.Errorf("serve --help has no %s section:\n%s", c, help.String())
		}
	}
}
