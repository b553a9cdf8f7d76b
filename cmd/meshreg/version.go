package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/meshreg/meshreg/node/buildinfo"
)

// versionCommand prints the build: one line, or JSON with --json.
func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version, commit and build date",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the build as a JSON object (version, commit, date, modified, go_version, platform)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("version takes no arguments (got %q)", c.Args().First())
			}
			info := buildinfo.Read()
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			_, err := fmt.Fprintln(c.App.Writer, info.String())
			return err
		},
	}
}
