package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/meshreg/meshreg/api"
)

// gcCommand runs a cluster-wide garbage collection through a node's API.
func gcCommand() *cli.Command {
	return &cli.Command{
		Name: "gc",
		Usage: "free the blobs no manifest references, on every node, while the registry serves " +
			"(run it on the node's host, as the endpoint answers loopback only; with the node's auth on, as a user with the admin right)",
		Flags: append([]cli.Flag{
			nodeFlag("a member's"),
			&cli.BoolFlag{Name: "dry-run", Usage: "list what would be freed, change nothing"},
			&cli.DurationFlag{Name: "grace", Value: time.Hour, Usage: "keep blobs linked less than `DURATION` ago (pushes in progress); 0s frees everything unreferenced now"},
		}, nodeClientFlags()...),
		Action: gcRun,
	}
}

func gcRun(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("meshreg gc takes no arguments (got %q)", c.Args().First())
	}
	q := url.Values{"grace": {c.Duration("grace").String()}}
	if c.Bool("dry-run") {
		q.Set("dry_run", "1")
	}
	req, err := nodeRequest(c, http.MethodPost, "/_meshreg/v1/gc?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	// The node streams progress lines until the collection ends, which
	// has no fixed bound on a large registry.
	resp, err := nodeDoWithin(c, req, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return fmt.Errorf("garbage collection: %s", apiErrorText(resp.StatusCode, body))
	}
	out, errw := c.App.Writer, c.App.ErrWriter
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var l api.GCLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return fmt.Errorf("garbage collection: bad answer line from %s: %w", req.URL, err)
		}
		switch {
		case l.Progress != "":
			fmt.Fprintln(errw, l.Progress)
		case l.Error != "":
			return fmt.Errorf("garbage collection: %s", l.Error)
		case l.Result != nil:
			printGC(out, *l.Result)
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("garbage collection: reading the answer: %w (the collection may still finish on the node)", err)
	}
	return fmt.Errorf("garbage collection: the node closed the answer before the result (the collection may still finish on the node)")
}

func printGC(w io.Writer, r api.GCResult) {
	printRetention(w, r)
	if r.DryRun {
		fmt.Fprintf(w, "dry run at index %d (grace %s): %d blobs (%d bytes) would be freed, %d unreferenced kept\n",
			r.MarkIndex, r.Grace, r.Blobs, r.Bytes, r.Kept)
		for _, c := range r.Candidates {
			fmt.Fprintf(w, "%s\t%d\t%s\n", c.Digest, c.Size, strings.Join(c.Repos, ","))
		}
		if r.Blobs > len(r.Candidates) {
			fmt.Fprintf(w, "(%d more not listed)\n", r.Blobs-len(r.Candidates))
		}
		return
	}
	fmt.Fprintf(w, "collected at index %d (grace %s) in %s: %d blobs (%d bytes) unlinked, %d unreferenced kept\n",
		r.MarkIndex, r.Grace, r.Duration, r.Blobs, r.Bytes, r.Kept)
	fmt.Fprintf(w, "NODE\tROLE\tBLOBS FREED\tBYTES FREED\tLEFTOVERS\tLEFTOVER BYTES\tKEPT\n")
	for _, n := range r.Nodes {
		role := cmp.Or(n.Role, "member")
		if n.Error != "" {
			fmt.Fprintf(w, "%s\t%s\t-\t-\t-\t-\t-\t(%s)\n", n.Node, role, n.Error)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", n.Node, role, n.Blobs, n.Bytes, n.LeftoverBlobs, n.LeftoverBytes, n.Kept)
	}
}

// printRetention lists what the content policy's retention deleted (would
// delete, on a dry run): one line each, "tag REPO:TAG DIGEST" or
// "manifest REPO@DIGEST", then the reason.
func printRetention(w io.Writer, r api.GCResult) {
	verb := "deleted"
	if r.DryRun {
		verb = "would delete"
	}
	if len(r.Retention) > 0 || r.RetentionSkipped > 0 {
		fmt.Fprintf(w, "retention %s %d tags and untagged manifests", verb, len(r.Retention))
		if r.RetentionSkipped > 0 {
			fmt.Fprintf(w, " (%d skipped: a write raced them; the next collection decides again)", r.RetentionSkipped)
		}
		fmt.Fprintln(w)
	}
	for _, d := range r.Retention {
		if d.Tag != "" {
			fmt.Fprintf(w, "retention %s tag %s:%s\t%s\t%s\n", verb, d.Repo, d.Tag, d.Digest, d.Reason)
		} else {
			fmt.Fprintf(w, "retention %s manifest %s@%s\t%s\n", verb, d.Repo, d.Digest, d.Reason)
		}
	}
}
