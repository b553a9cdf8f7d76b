package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshreg/meshreg/node/mirror"
)

// A setting of `meshreg serve` is declared once, as one line of the table
// in serveConfig.settings: its flag name (which is also its --config key
// and, as MESHREG_NAME, its environment variable), its --help category and
// usage, and a pointer to the field of serveConfig it fills. The default
// is whatever that field holds in defaultServeConfig (node.DefaultConfig,
// api.DefaultConfig), the flag is built from the line, the parsed value is
// stored through the pointer, and `serve --check` prints it back from
// there: no second list to keep in step.
//
// Why a table of typed descriptors and not struct tags read by reflection:
// the settings land in node.Config and api.Config, which belong to other
// packages and are not shaped like the command line (a size is an int64,
// the log level a slog.Level, the join token is never printed), so a
// tagged struct would be a third copy to map onto them. A descriptor
// points straight at the destination field, its constructor picks the
// flag type and the parser, and the compiler checks that they agree.
type setting struct {
	name string
	// flag builds the cli flag, with the field's current value as default.
	flag func() cli.Flag
	// read stores the parsed flag's value in the field; an error names the
	// flag and what it wants.
	read func(c flagGetter) error
	// show is the field's value as `serve --check` prints it: what the
	// flag parses back to the same value.
	show func() any
}

// flagGetter reads parsed flags; *cli.Context is one.
type flagGetter interface {
	String(name string) string
	Duration(name string) time.Duration
	Int(name string) int
	Int64(name string) int64
	Uint64(name string) uint64
	StringSlice(name string) []string
}

// envVars is the one environment variable of the flag name:
// data-dir is MESHREG_DATA_DIR.
func envVars(name string) []string {
	return []string{"MESHREG_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
}

func stringSetting(p *string, name, category, usage string) setting {
	return setting{
		name: name,
		flag: func() cli.Flag {
			return &cli.StringFlag{Name: name, Value: *p, Usage: usage, Category: category, EnvVars: envVars(name)}
		},
		read: func(c flagGetter) error { *p = c.String(name); return nil },
		show: func() any { return *p },
	}
}

// secretSetting is a string setting that `serve --check` prints as
// hiddenSecret when set, never as itself.
func secretSetting(p *string, name, category, usage string) setting {
	s := stringSetting(p, name, category, usage)
	s.show = func() any {
		if *p == "" {
			return ""
		}
		return hiddenSecret
	}
	return s
}

// listSetting is a repeatable flag; `serve --check` prints an empty list
// as [] (which reads back), not null.
func listSetting(p *[]string, name, category, usage string) setting {
	return setting{
		name: name,
		flag: func() cli.Flag {
			var def *cli.StringSlice
			if len(*p) > 0 { // an empty default would show in --help as one
				def = cli.NewStringSlice(*p...)
			}
			return &cli.StringSliceFlag{Name: name, Value: def, Usage: usage, Category: category, EnvVars: envVars(name)}
		},
		read: func(c flagGetter) error { *p = c.StringSlice(name); return nil },
		show: func() any {
			if *p == nil {
				return []string{}
			}
			return *p
		},
	}
}

func intSetting(p *int, name, category, usage string) setting {
	return setting{
		name: name,
		flag: func() cli.Flag {
			return &cli.IntFlag{Name: name, Value: *p, Usage: usage, Category: category, EnvVars: envVars(name)}
		},
		read: func(c flagGetter) error { *p = c.Int(name); return nil },
		show: func() any { return *p },
	}
}

func int64Setting(p *int64, name, category, usage string) setting {
	return setting{
		name: name,
		flag: func() cli.Flag {
			return &cli.Int64Flag{Name: name, Value: *p, Usage: usage, Category: category, EnvVars: envVars(name)}
		},
		read: func(c flagGetter) error { *p = c.Int64(name); return nil },
		show: func() any { return *p },
	}
}

func uint64Setting(p *uint64, name, category, usage string) setting {
	return setting{
		name: name,
		flag: func() cli.Flag {
			return &cli.Uint64Flag{Name: name, Value: *p, Usage: usage, Category: category, EnvVars: envVars(name)}
		},
		read: func(c flagGetter) error { *p = c.Uint64(name); return nil },
		show: func() any { return *p },
	}
}

// durationSetting prints as Go writes durations ("1m0s"), which the flag
// parses back.
func durationSetting(p *time.Duration, name, category, usage string) setting {
	return setting{
		name: name,
		flag: func() cli.Flag {
			return &cli.DurationFlag{Name: name, Value: *p, Usage: usage, Category: category, EnvVars: envVars(name)}
		},
		read: func(c flagGetter) error { *p = c.Duration(name); return nil },
		show: func() any { return p.String() },
	}
}

// upstreamSetting is the repeatable --upstream, each value parsed into an
// upstream (mirror.ParseUpstream); an error names the entry. In the config
// file an item may also be a mapping (name, url, revalidate, allow, ...),
// which loadConfigFile writes in the flag's form.
func upstreamSetting(p *[]mirror.UpstreamConfig, name, category, usage string) setting {
	return setting{
		name: name,
		flag: func() cli.Flag {
			return &cli.StringSliceFlag{Name: name, Aliases: []string{name + "s"}, Usage: usage, Category: category, EnvVars: envVars(name)}
		},
		read: func(c flagGetter) error {
			*p = nil
			var errs []error
			for _, v := range c.StringSlice(name) {
				u, err := mirror.ParseUpstream(v)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				*p = append(*p, u)
			}
			return errors.Join(errs...)
		},
		show: func() any {
			out := []string{}
			for _, u := range *p {
				out = append(out, u.String())
			}
			return out
		},
	}
}

// textSetting is a setting given as text that parse turns into the field
// (and refuses with an error naming the flag), and format turns back.
func textSetting(name, category, usage string, format func() string, parse func(string) error) setting {
	return setting{
		name: name,
		flag: func() cli.Flag {
			return &cli.StringFlag{Name: name, Value: format(), Usage: usage, Category: category, EnvVars: envVars(name)}
		},
		read: func(c flagGetter) error { return parse(c.String(name)) },
		show: func() any { return format() },
	}
}

// sizeSetting is a byte count written as 256MiB, 1GiB or bytes (size.go).
func sizeSetting(p *int64, name, category, usage string) setting {
	return textSetting(name, category, usage,
		func() string { return formatSize(*p) },
		func(s string) (err error) { *p, err = parseSize(name, s); return err })
}

// levelSetting is a log level: debug, info, warn or error.
func levelSetting(p *slog.Level, name, category, usage string) setting {
	return textSetting(name, category, usage,
		func() string { return strings.ToLower(p.String()) },
		func(s string) error {
			if err := p.UnmarshalText([]byte(s)); err != nil {
				return fmt.Errorf("--%s %q: use debug, info, warn or error", name, s)
			}
			return nil
		})
}

// choiceSetting is a string that must be one of choices.
func choiceSetting(p *string, name, category, usage string, choices ...string) setting {
	return textSetting(name, category, usage,
		func() string { return *p },
		func(s string) error {
			for _, c := range choices {
				if s == c {
					*p = s
					return nil
				}
			}
			return fmt.Errorf("--%s %q: use %s", name, s, orList(choices))
		})
}

// orList writes a, b or c.
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}
