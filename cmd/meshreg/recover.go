package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/node"
	"github.com/meshreg/meshreg/node/buildinfo"
	"github.com/meshreg/meshreg/node/datadir"
	"github.com/meshreg/meshreg/p2p"
)

// lockStoppedDataDir takes the data dir's lock as `serve` does, so that
// recover refuses a data dir a running node holds, and checks that this
// binary reads the data dir's layouts. It does not create the data dir.
func lockStoppedDataDir(dir string) (*datadir.Lock, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("data dir %s does not exist: pass the stopped node's --data-dir", dir)
	}
	lock, err := datadir.Acquire(dir)
	if err != nil {
		return nil, err
	}
	if _, err := datadir.CheckFormat(dir, buildinfo.Read().Version); err != nil && !errors.Is(err, datadir.ErrNotRecorded) {
		_ = lock.Close()
		return nil, err
	}
	return lock, nil
}

// recoverCommand rewrites a stopped node's Raft configuration after the
// cluster lost its quorum for good (see README, "Recovering a cluster that
// lost its quorum").
func recoverCommand() *cli.Command {
	return &cli.Command{
		Name: "recover",
		Usage: "on a STOPPED node of a cluster that lost its quorum for good: rewrite its Raft configuration " +
			"so that it starts as a cluster of itself (and the --keep members), with all its data",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: node.DefaultConfig().DataDir, Usage: "the stopped node's `DIR`", EnvVars: []string{"MESHREG_DATA_DIR"}},
			&cli.StringSliceFlag{Name: "keep", Usage: "peer `ID`s of other surviving members to keep as voters (comma-separated or repeated); " +
				"run recover with the same set on each of them before starting any"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("recover takes no arguments (got %q): use --data-dir and --keep", c.Args().First())
			}
			dir := c.String("data-dir")
			lock, err := lockStoppedDataDir(dir)
			if err != nil {
				return err
			}
			defer lock.Close()
			id, err := p2p.IdentityID(dir)
			if err != nil {
				return err
			}
			var keep []string
			for _, k := range c.StringSlice("keep") {
				if k = strings.TrimSpace(k); k != "" {
					keep = append(keep, k)
				}
			}
			servers, err := consensus.Recover(consensus.Config{Dir: filepath.Join(dir, "meta"), NodeID: id.String()}, keep)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "rewrote the Raft configuration of %s: %d voter(s)\n", id, len(servers))
			for _, s := range servers {
				fmt.Fprintf(c.App.Writer, "  %s  %s\n", s.ID, s.Address)
			}
			fmt.Fprintln(c.App.Writer, "start the node as before; lost members that come back must start with an empty data dir and join again (--join, --join-token)")
			return nil
		},
	}
}
