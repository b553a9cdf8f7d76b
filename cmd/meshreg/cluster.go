package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// clusterCommand shows and changes cluster membership through any node's
// API.
func clusterCommand() *cli.Command {
	nodeFlag := nodeFlag("any node's")
	return &cli.Command{
		Name:  "cluster",
		Usage: "show the cluster's members and all its nodes, or remove a member for good",
		Subcommands: []*cli.Command{
			{
				Name:   "members",
				Usage:  "list the members: peer id, Raft address, suffrage, leader",
				Flags:  append([]cli.Flag{nodeFlag}, nodeClientFlags()...),
				Action: clusterMembers,
			},
			{
				Name:   "nodes",
				Usage:  "list every node: members and followers of the metadata, role, version, region/zone, applied index and lag, the member each follower tails",
				Flags:  append([]cli.Flag{nodeFlag}, nodeClientFlags()...),
				Action: clusterNodes,
			},
			{
				Name:      "remove",
				Usage:     "remove a member (by peer id) from the cluster for good; a peer id that is no member is revoked as a follower of the metadata for good",
				ArgsUsage: "PEER_ID",
				Flags:     append([]cli.Flag{nodeFlag}, nodeClientFlags()...),
				Action:    clusterRemove,
			},
		},
	}
}

func clusterMembers(c *cli.Context) error {
	var st struct {
		NodeID   string `json:"node_id"`
		Role     string `json:"role"`
		Follower *struct {
			Source string `json:"source"`
			Lag    uint64 `json:"lag"`
		} `json:"follower"`
		Raft struct {
			State    string `json:"state"`
			LeaderID string `json:"leader_id"`
			Term     uint64 `json:"term"`
			Members  []struct {
				ID, Address, Suffrage string
			} `json:"members"`
		} `json:"raft"`
	}
	if err := nodeGetJSON(c, "/_meshreg/v1/status", &st); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER ID\tSUFFRAGE\tLEADER\tRAFT ADDRESS")
	for _, m := range st.Raft.Members {
		leader := ""
		if m.ID == st.Raft.LeaderID {
			leader = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.ID, m.Suffrage, leader, m.Address)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.Role == "follower" && st.Follower != nil {
		// Followers are not members: the node asked says it is one.
		_, err := fmt.Fprintf(c.App.Writer, "\n%s (the node asked) follows the metadata without being a member: tailing from %s, %d entries behind the leader\n",
			st.NodeID, cmp.Or(st.Follower.Source, "no member yet"), st.Follower.Lag)
		return err
	}
	return nil
}

// clusterNodes prints GET /_meshreg/v1/nodes as a table, then the members
// that could not be asked for their followers.
func clusterNodes(c *cli.Context) error {
	var fleet struct {
		LeaderIndex uint64 `json:"leader_index"`
		Nodes       []struct {
			ID, Role, Version, Region, Zone, Source string
			Applied, Lag                            uint64
		} `json:"nodes"`
		Unreachable map[string]string `json:"unreachable"`
		Partial     bool              `json:"partial"`
	}
	if err := nodeGetJSON(c, "/_meshreg/v1/nodes", &fleet); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER ID\tROLE\tVERSION\tREGION/ZONE\tAPPLIED\tLAG\tTAILS FROM")
	followers := 0
	for _, n := range fleet.Nodes {
		place := "-"
		if n.Region != "" || n.Zone != "" {
			place = cmp.Or(n.Region, "-") + "/" + cmp.Or(n.Zone, "-")
		}
		if n.Role == "follower" {
			followers++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", n.ID, cmp.Or(n.Role, "?"), cmp.Or(n.Version, "?"), cmp.Or(place, "-"), n.Applied, n.Lag, cmp.Or(n.Source, "-"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "\n%d nodes: %d members, %d followers\n", len(fleet.Nodes), len(fleet.Nodes)-followers, followers)
	for _, id := range slices.Sorted(maps.Keys(fleet.Unreachable)) {
		fmt.Fprintf(c.App.Writer, "member %s could not be asked for its followers (those no other member knows are missing above): %s\n", id, fleet.Unreachable[id])
	}
	if fleet.Partial {
		fmt.Fprintln(c.App.Writer, "the list is partial: no member answered, or one knows more followers than it lists")
	}
	return nil
}

func clusterRemove(c *cli.Context) error {
	id := c.Args().First()
	if id == "" || c.Args().Len() != 1 {
		return fmt.Errorf("usage: meshreg cluster remove [--node ADDR] PEER_ID")
	}
	req, err := nodeRequest(c, http.MethodDelete, "/_meshreg/v1/members/"+id, nil)
	if err != nil {
		return err
	}
	resp, err := nodeDo(c, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch resp.StatusCode {
	case http.StatusNoContent:
		fmt.Fprintf(c.App.Writer, "removed %s from the cluster\n", id)
	case http.StatusOK:
		// A peer id that is no member was revoked as a follower: the node
		// says so ("revoked follower ID").
		fmt.Fprintf(c.App.Writer, "%s\n", strings.TrimSpace(string(msg)))
	default:
		return errors.New(apiErrorText(resp.StatusCode, msg)) // the node's message names the member
	}
	return nil
}

// nodeGetJSON reads GET path on the --node as JSON into v (at most 64 MiB:
// a fleet of thousands of nodes fits), with the node's error when it
// answers anything but 200.
func nodeGetJSON(c *cli.Context, path string, v any) error {
	req, err := nodeRequest(c, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	resp, err := nodeDo(c, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("reading %s: %s", req.URL, apiErrorText(resp.StatusCode, msg))
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return fmt.Errorf("reading %s: %w", req.URL, err)
	}
	return nil
}
