package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/consensus/state/policy"
)

// policyCommand reads and replaces the cluster's content policy
// (retention, immutable tags, quotas) through a node's API.
func policyCommand() *cli.Command {
	flags := append([]cli.Flag{nodeFlag("a member's")}, nodeClientFlags()...)
	return &cli.Command{
		Name:  "policy",
		Usage: "show or replace the cluster's content policy: retention, immutable tags, quotas (admin right)",
		Subcommands: []*cli.Command{
			{
				Name:      "set",
				Usage:     "validate the policy YAML `--file` and store it through Raft: every node enforces it",
				ArgsUsage: " ",
				Flags: append([]cli.Flag{&cli.StringFlag{Name: "file", Required: true,
					Usage: "policy YAML `FILE` (`rules: []` clears the policy)"}}, flags...),
				Action: policySet,
			},
			{
				Name:      "show",
				Usage:     "print the policy in force (YAML), or with --usage each repository's usage and quota",
				ArgsUsage: " ",
				Flags: append([]cli.Flag{&cli.BoolFlag{Name: "usage",
					Usage: "print each repository's usage in bytes and its quota"}}, flags...),
				Action: policyShow,
			},
		},
	}
}

func policySet(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("meshreg policy set takes no arguments (got %q): pass the file with --file", c.Args().First())
	}
	name := c.String("file")
	doc, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("reading the policy: %w", err)
	}
	if len(doc) > api.MaxPolicyBytes {
		return fmt.Errorf("%s is %d bytes: a policy holds at most %d", name, len(doc), api.MaxPolicyBytes)
	}
	if _, err := policy.Parse(doc); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	req, err := nodeRequest(c, http.MethodPut, "/_meshreg/v1/policy", bytes.NewReader(doc))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/yaml")
	resp, err := nodeDo(c, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("storing the policy: %s", apiErrorText(resp.StatusCode, body))
	}
	fmt.Fprintf(c.App.Writer, "policy from %s stored: every node enforces it\n", name)
	return nil
}

func policyShow(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("meshreg policy show takes no arguments (got %q)", c.Args().First())
	}
	path := "/_meshreg/v1/policy"
	if c.Bool("usage") {
		path += "/usage"
	}
	req, err := nodeRequest(c, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := nodeDo(c, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	switch {
	case resp.StatusCode == http.StatusNoContent:
		fmt.Fprintln(c.App.ErrWriter, "no content policy is set")
		return nil
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("reading the policy: %s", apiErrorText(resp.StatusCode, body))
	case !c.Bool("usage"):
		_, err := c.App.Writer.Write(body)
		return err
	}
	var u api.PolicyUsage
	if err := json.Unmarshal(body, &u); err != nil {
		return fmt.Errorf("reading the usage: %w", err)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "REPOSITORY\tBYTES\tQUOTA\tRULE\n")
	for _, r := range u.Repositories {
		q, rule := "-", "-"
		if r.Quota > 0 {
			q, rule = fmt.Sprint(r.Quota), fmt.Sprint(r.Rule)
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\n", r.Repo, r.Bytes, q, rule)
	}
	if u.Truncated {
		fmt.Fprintln(w, "(more repositories not listed)")
	}
	return nil
}
