package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// tokenCommand issues join tokens through a member's API.
func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "issue join tokens: a new node passes one with --join-token to be admitted",
		Subcommands: []*cli.Command{
			{
				Name: "create",
				Usage: "ask a member for a join token (run it on that node's host, as the endpoint answers loopback only; " +
					"with the node's --auth-htpasswd on, from anywhere as a user with the admin right), " +
					"and print it; any member admits a joiner that presents it until it expires",
				Flags: append([]cli.Flag{
					nodeFlag("a member's"),
					&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "`DURATION` the token admits joiners for (at most 168h)"},
				}, nodeClientFlags()...),
				Action: tokenCreate,
			},
		},
	}
}

func tokenCreate(c *cli.Context) error {
	base, err := nodeURL(c.String("node"))
	if err != nil {
		return err
	}
	u := base + "/_meshreg/v1/join-tokens?ttl=" + url.QueryEscape(c.Duration("ttl").String())
	req, err := http.NewRequestWithContext(c.Context, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	resp, err := nodeDo(c, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
			return fmt.Errorf("creating a join token: %s: %s: %s", resp.Status, e.Errors[0].Code, e.Errors[0].Message)
		}
		return fmt.Errorf("creating a join token: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var tok struct {
		Token   string    `json:"token"`
		Expires time.Time `json:"expires"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.Token == "" {
		return fmt.Errorf("creating a join token: bad answer from %s: %v", u, err)
	}
	fmt.Fprintln(c.App.Writer, tok.Token)
	fmt.Fprintf(c.App.ErrWriter, "expires %s; start the new node with --join-token (or MESHREG_JOIN_TOKEN) and --join %s\n",
		tok.Expires.Format(time.RFC3339), base)
	return nil
}
