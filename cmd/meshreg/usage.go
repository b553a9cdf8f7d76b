package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// withUsageErrors makes every command of app answer a mistake in its
// flags (an unknown flag, a value that does not parse, on the command line
// or in a MESHREG_* variable) with one line that names the flag, the value
// and what it needs, and points at --help, instead of urfave/cli's
// "Incorrect Usage" followed by the whole help text.
//
// A command with subcommands and no action of its own prints its help when
// given nothing, and answers an unknown subcommand with the nearest one
// (urfave/cli said "No help topic" and exited 3).
func withUsageErrors(app *cli.App) *cli.App {
	app.OnUsageError = usageErrorFunc(app.Name, nil)
	if app.Action == nil {
		app.Action = unknownCommand(app.Name, app.Commands)
	}
	var walk func(prefix string, cmds []*cli.Command)
	walk = func(prefix string, cmds []*cli.Command) {
		for _, c := range cmds {
			path := prefix + " " + c.Name
			if c.OnUsageError == nil {
				c.OnUsageError = usageErrorFunc(path, c.Flags)
			}
			if c.Action == nil && len(c.Subcommands) > 0 {
				c.Action = unknownCommand(path, c.Subcommands)
				if c.UsageText == "" {
					c.UsageText = path + " command [command options]"
				}
			}
			walk(path, c.Subcommands)
		}
	}
	walk(app.Name, app.Commands)
	return app
}

// unknownCommand is the action of a command (path) that only has
// subcommands: its help, or an error naming the unknown subcommand.
func unknownCommand(path string, subs []*cli.Command) cli.ActionFunc {
	return func(c *cli.Context) error {
		if !c.Args().Present() {
			if c.Command == nil || c.Command.Name == "" || c.Command.Name == c.App.Name {
				return cli.ShowAppHelp(c)
			}
			return cli.ShowSubcommandHelp(c)
		}
		var names []string
		for _, s := range subs {
			names = append(names, s.Names()...)
		}
		name, hint := c.Args().First(), ""
		if near, ok := nearest(name, names); ok {
			hint = fmt.Sprintf(" (did you mean %q?)", near)
		}
		return fmt.Errorf("unknown command %q%s; see %s --help", name, hint, path)
	}
}

var (
	// The messages of Go's flag package and of urfave/cli's env parsing.
	reInvalidValue = regexp.MustCompile(`^invalid (?:boolean )?value "(.*)" for flag -([^:]+): (.*)$`)
	reNotDefined   = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	reNeedsArg     = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
	reFromEnv      = regexp.MustCompile(`^could not parse "(.*)" as \S+ value from (?:environment variable|env|file) "?([^"\s]+)"? for flag (\S+): (.*)$`)
)

func usageErrorFunc(path string, flags []cli.Flag) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		see := "; see " + path + " --help"
		msg := err.Error()
		if m := reInvalidValue.FindStringSubmatch(msg); m != nil {
			return fmt.Errorf("--%s %q: %s%s", m[2], m[1], valueProblem(findFlag(flags, m[2]), m[1], m[3]), see)
		}
		if m := reFromEnv.FindStringSubmatch(msg); m != nil {
			return fmt.Errorf("%s %q (--%s): %s%s", m[2], m[1], m[3], valueProblem(findFlag(flags, m[3]), m[1], m[4]), see)
		}
		if m := reNotDefined.FindStringSubmatch(msg); m != nil {
			hint := ""
			if near, ok := nearest(m[1], flagNames(flags)); ok {
				hint = fmt.Sprintf(" (did you mean --%s?)", near)
			}
			return fmt.Errorf("unknown flag --%s%s%s", m[1], hint, see)
		}
		if m := reNeedsArg.FindStringSubmatch(msg); m != nil {
			return fmt.Errorf("--%s needs a value%s", m[1], see)
		}
		return fmt.Errorf("%s%s", msg, see)
	}
}

// valueProblem says what is wrong with value as the value of f, in words
// an operator can act on; reason is the parser's own explanation.
func valueProblem(f cli.Flag, value, reason string) string {
	switch f.(type) {
	case *cli.DurationFlag:
		if _, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			return "a duration needs a unit, e.g. 5s, 10m, 1h"
		}
		if _, err := time.ParseDuration(value); err != nil {
			return "not a duration: want a number and a unit, e.g. 500ms, 5s, 10m, 1h"
		}
	case *cli.IntFlag, *cli.Int64Flag:
		return "not a whole number"
	case *cli.Uint64Flag, *cli.UintFlag:
		return "not a whole number of 0 or more"
	case *cli.BoolFlag:
		return "want true or false"
	}
	return reason
}

// findFlag returns the flag named name (or with that alias) among flags,
// or nil.
func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// flagNames lists the names and aliases of flags, and help's.
func flagNames(flags []cli.Flag) []string {
	names := []string{"help"}
	for _, f := range flags {
		names = append(names, f.Names()...)
	}
	return names
}
