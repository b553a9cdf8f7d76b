package node

import (
	"slices"
	"testing"
	"time"

	"github.com/meshreg/meshreg/consensus"
)

func TestPromotions(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	const stab = 10 * time.Second
	long, short := now.Add(-time.Minute), now.Add(-time.Second)
	v := func(id string) consensus.Member { return consensus.Member{ID: id, Suffrage: consensus.Voter} }
	nv := func(id string) consensus.Member { return consensus.Member{ID: id, Suffrage: consensus.Nonvoter} }
	tests := []struct {
		name    string
		members []consensus.Member
		healthy map[string]time.Time
		target  int
		want    []string
	}{
		{"one voter, one healthy non-voter: 1 -> 2 would lose the quorum with either", []consensus.Member{v("a"), nv("b")}, map[string]time.Time{"b": long}, 3, nil},
		{"one voter, two healthy non-voters: both together, 1 -> 3", []consensus.Member{v("a"), nv("b"), nv("c")}, map[string]time.Time{"b": long, "c": long}, 3, []string{"b", "c"}},
		{"second non-voter not yet stable", []consensus.Member{v("a"), nv("b"), nv("c")}, map[string]time.Time{"b": long, "c": short}, 3, nil},
		{"second non-voter unhealthy", []consensus.Member{v("a"), nv("b"), nv("c")}, map[string]time.Time{"b": long}, 3, nil},
		{"stabilization is inclusive", []consensus.Member{v("a"), nv("b"), nv("c")}, map[string]time.Time{"b": now.Add(-stab), "c": now.Add(-stab)}, 3, []string{"b", "c"}},
		{"three healthy non-voters, target 3: two, longest healthy first", []consensus.Member{v("a"), nv("d"), nv("c"), nv("b")}, map[string]time.Time{"b": long, "c": long.Add(time.Second), "d": long.Add(-time.Second)}, 3, []string{"d", "b"}},
		{"three voters at target: none", []consensus.Member{v("a"), v("b"), v("c"), nv("d"), nv("e")}, map[string]time.Time{"d": long, "e": long}, 3, nil},
		{"two voters after a removal, one healthy non-voter: 2 -> 3", []consensus.Member{v("a"), v("b"), nv("c")}, map[string]time.Time{"c": long}, 3, []string{"c"}},
		{"two voters, two healthy non-voters, target 3: one", []consensus.Member{v("a"), v("b"), nv("c"), nv("d")}, map[string]time.Time{"c": long, "d": long}, 3, []string{"c"}},
		{"three voters, target 5, one healthy: 3 -> 4 is even", []consensus.Member{v("a"), v("b"), v("c"), nv("d")}, map[string]time.Time{"d": long}, 5, nil},
		{"three voters, target 5, two healthy: 3 -> 5", []consensus.Member{v("a"), v("b"), v("c"), nv("d"), nv("e")}, map[string]time.Time{"d": long, "e": long}, 5, []string{"d", "e"}},
		{"even target counts as the odd one below", []consensus.Member{v("a"), nv("b"), nv("c"), nv("d")}, map[string]time.Time{"b": long, "c": long, "d": long}, 4, []string{"b", "c"}},
		{"target 1: never promote", []consensus.Member{v("a"), nv("b"), nv("c")}, map[string]time.Time{"b": long, "c": long}, 1, nil},
		{"staging or unknown suffrage is not promoted", []consensus.Member{v("a"), {ID: "b", Suffrage: "Staging"}, nv("c")}, map[string]time.Time{"b": long, "c": long}, 3, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := promotions(tc.members, tc.healthy, now, stab, tc.target, func(string) peerLabels { return peerLabels{} })
			if !slices.Equal(got, tc.want) {
				t.Errorf("promotions = %v, want %v", got, tc.want)
			}
			voters := 0
			for _, m := range tc.members {
				if m.Suffrage == consensus.Voter {
					voters++
				}
			}
			if after := voters + len(got); len(got) > 0 && after%2 == 0 {
				t.Errorf("promoting %v leaves %d voters, an even count", got, after)
			}
		})
	}
}

// The voters are spread over regions, then zones: a zone or region lost
// takes as few voters with it as the layout allows.
func TestPromotionsSpreadVoters(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	const stab = 10 * time.Second
	// Every candidate healthy long enough; a is healthy the longest, so
	// without places the choice would be by that alone.
	healthy := func(ids ...string) map[string]time.Time {
		m := map[string]time.Time{}
		for i, id := range ids {
			m[id] = now.Add(-time.Hour + time.Duration(i)*time.Minute)
		}
		return m
	}
	v := func(id string) consensus.Member { return consensus.Member{ID: id, Suffrage: consensus.Voter} }
	nv := func(id string) consensus.Member { return consensus.Member{ID: id, Suffrage: consensus.Nonvoter} }
	at := map[string]peerLabels{
		"leader": {Region: "eu", Zone: "eu-1"},
		"a":      {Region: "eu", Zone: "eu-1"}, "b": {Region: "eu", Zone: "eu-1"},
		"c": {Region: "eu", Zone: "eu-2"}, "d": {Region: "eu", Zone: "eu-3"},
		"e": {Region: "us", Zone: "us-1"}, "f": {Region: "us", Zone: "us-2"},
		"g": {Region: "ap", Zone: "ap-1"},
	}
	where := func(id string) peerLabels { return at[id] }
	tests := []struct {
		name    string
		members []consensus.Member
		healthy map[string]time.Time
		target  int
		want    []string
	}{
		{"one region, three zones: the other two zones, not the leader's", []consensus.Member{v("leader"), nv("a"), nv("b"), nv("c"), nv("d")},
			healthy("a", "b", "c", "d"), 3, []string{"c", "d"}},
		{"a lost voter is replaced in the region that has fewest", []consensus.Member{v("leader"), v("e"), nv("a"), nv("f"), nv("g")},
			healthy("a", "f", "g"), 3, []string{"g"}},
		{"one voter to five over three regions: 2+2+1, never two in one zone", []consensus.Member{v("leader"), nv("a"), nv("c"), nv("e"), nv("f"), nv("g")},
			healthy("a", "c", "e", "f", "g"), 5, []string{"e", "g", "c", "f"}},
		{"one zone only: the longest healthy, as without places", []consensus.Member{v("leader"), nv("b"), nv("a")},
			healthy("a", "b"), 3, []string{"a", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := promotions(tc.members, tc.healthy, now, stab, tc.target, where)
			if !slices.Equal(got, tc.want) {
				t.Errorf("promotions = %v, want %v", got, tc.want)
			}
		})
	}
}
