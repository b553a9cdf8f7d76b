package node

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/meshreg/meshreg/api"
)

// TestGCProgressListsFewFollowersAndSumsMany: a collection's progress
// names each member and, while they are few, each follower; a fleet of
// followers gets one line for all of them plus one per follower without a
// report, so 1,000 hosts do not print 1,000 lines (the result lists all).
func TestGCProgressListsFewFollowersAndSumsMany(t *testing.T) {
	reports := func(followers, failed int) []api.GCNodeReport {
		out := []api.GCNodeReport{{Node: "m1", Role: "member", Blobs: 1, Bytes: 10}}
		for i := range followers {
			r := api.GCNodeReport{Node: fmt.Sprintf("f%d", i), Role: "follower", Via: "m1", Blobs: 2, Bytes: 20}
			if i < failed {
				r = api.GCNodeReport{Node: r.Node, Role: "follower", Via: "m1", Error: "asking for its report: timeout"}
			}
			out = append(out, r)
		}
		return out
	}
	collect := func(rs []api.GCNodeReport) []string {
		var lines []string
		gcProgressReports(rs, func(s string) { lines = append(lines, s) })
		return lines
	}

	few := collect(reports(2, 1))
	want := []string{
		"node m1: freed 1 blobs (10 bytes), 0 leftovers (0 bytes), kept 0 in use or newer",
		"follower f0: no report: asking for its report: timeout",
		"follower f1: freed 2 blobs (20 bytes), 0 leftovers (0 bytes), kept 0 in use or newer",
	}
	if !slices.Equal(few, want) {
		t.Errorf("2 followers:\n%s\nwant\n%s", strings.Join(few, "\n"), strings.Join(want, "\n"))
	}

	many := collect(reports(1000, 30))
	if got, max := len(many), 1+gcFollowersListed+1; got != max {
		t.Errorf("1,000 followers, 30 without a report: %d lines, want %d (the member, %d failures, a summary):\n%s",
			got, max, gcFollowersListed, strings.Join(many, "\n"))
	}
	if last, want := many[len(many)-1], "1000 followers: 970 reported, freeing 1940 blobs (19400 bytes) in all; 30 without a report"; last != want {
		t.Errorf("summary %q, want %q", last, want)
	}
}
