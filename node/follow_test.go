package node

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/p2p"
)

func TestAdmitAsMember(t *testing.T) {
	t.Parallel()
	v := func(id string) consensus.Member { return consensus.Member{ID: id, Suffrage: consensus.Voter} }
	nv := func(id string) consensus.Member { return consensus.Member{ID: id, Suffrage: consensus.Nonvoter} }
	tests := []struct {
		name         string
		members      []consensus.Member
		joiner       string
		voters, max  int
		wantAsMember bool
		newRegion    bool // the joiner's region has no member
	}{
		{"a lone first node takes non-voters to make voters", []consensus.Member{v("a")}, "b", 3, 0, true, false},
		{"still below the voter target", []consensus.Member{v("a"), nv("b")}, "c", 3, 0, true, false},
		{"at the voter target, no non-voter slot", []consensus.Member{v("a"), nv("b"), nv("c")}, "d", 3, 0, false, false},
		{"a free non-voter slot", []consensus.Member{v("a"), v("b"), v("c"), nv("d")}, "e", 3, 2, true, false},
		{"the non-voter slots are full", []consensus.Member{v("a"), v("b"), v("c"), nv("d"), nv("e")}, "f", 3, 2, false, false},
		{"a member comes back on a new address", []consensus.Member{v("a"), v("b"), v("c"), nv("d"), nv("e")}, "e", 3, 2, true, false},
		{"a voter comes back", []consensus.Member{v("a"), v("b"), v("c")}, "b", 3, 0, true, false},
		{"an even voter target counts one less", []consensus.Member{v("a"), nv("b"), nv("c")}, "d", 4, 0, false, false},
		{"five voters wanted", []consensus.Member{v("a"), v("b"), v("c")}, "d", 5, 0, true, false},
		{"the first node of a region takes a seat past the limit", []consensus.Member{v("a"), v("b"), v("c"), nv("d"), nv("e")}, "f", 3, 2, true, true},
		{"region seats are bounded too", []consensus.Member{v("a"), v("b"), v("c"), nv("d"), nv("e"), nv("r1"), nv("r2"), nv("r3"), nv("r4"), nv("r5"), nv("r6"), nv("r7"), nv("r8")}, "f", 3, 2, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := admitAsMember(tt.members, tt.joiner, tt.voters, tt.max, tt.newRegion); got != tt.wantAsMember {
				t.Errorf("admitAsMember = %v, want %v", got, tt.wantAsMember)
			}
		})
	}
}

func TestOrderTail(t *testing.T) {
	t.Parallel()
	self := peerLabels{Region: "r1", Zone: "z1"}
	members := []consensus.Member{
		{ID: "leader", Suffrage: consensus.Voter},
		{ID: "voter-far", Suffrage: consensus.Voter},
		{ID: "voter-zone", Suffrage: consensus.Voter},
		{ID: "nonvoter-region", Suffrage: consensus.Nonvoter},
		{ID: "nonvoter-zone", Suffrage: consensus.Nonvoter},
		{ID: "unknown", Suffrage: consensus.Nonvoter},
	}
	labels := map[string]peerLabels{
		"leader":          self,
		"voter-far":       {Region: "r2", Zone: "z9"},
		"voter-zone":      self,
		"nonvoter-region": {Region: "r1", Zone: "z2"},
		"nonvoter-zone":   self,
	}
	var got []string
	for _, m := range orderTail(members, "leader", self, labels) {
		got = append(got, m.ID)
	}
	want := []string{"nonvoter-zone", "voter-zone", "nonvoter-region", "unknown", "voter-far", "leader"}
	if !slices.Equal(got, want) {
		t.Errorf("orderTail = %v, want %v", got, want)
	}
}

func TestFollowerPass(t *testing.T) {
	t.Parallel()
	key, issuer := newTestIdentity(t)
	otherKey, other := newTestIdentity(t)
	_, follower := newTestIdentity(t)
	now := time.Unix(1_900_000_000, 0)
	isMember := func(id string) bool { return id == issuer.String() }
	valid, err := issuePass(key, issuer, follower, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	p, _, _ := strings.Cut(strings.TrimPrefix(valid, passPrefix), ".")
	forgedSig, _ := otherKey.Sign([]byte(passDomain + p))
	forged := passPrefix + p + "." + b64(forgedSig)
	// A join token is not a pass, though signed by the same key.
	token, _ := issueJoinToken(key, issuer, now.Add(time.Hour))
	expired, _ := issuePass(key, issuer, follower, now.Add(-time.Second))
	forever, _ := issuePass(key, issuer, follower, now.Add(passTTL+time.Hour))
	byOutsider, _ := issuePass(otherKey, other, follower, now.Add(time.Hour))

	tests := []struct {
		name, pass string
		subject    peer.ID
		wantErr    string
	}{
		{"valid", valid, follower, ""},
		{"presented by another peer", valid, other, "was issued to"},
		{"forged signature", forged, follower, "invalid signature"},
		{"a join token", token, follower, "not a meshreg follower pass"},
		{"expired", expired, follower, "expired"},
		{"too far in the future", forever, follower, "too far"},
		{"issued by a non-member", byOutsider, follower, "not a member"},
		{"too long", passPrefix + strings.Repeat("a", maxPassLen), follower, "longer than"},
		{"garbage", passPrefix + "!!!.???", follower, "malformed"},
		{"empty", "", follower, "not a meshreg follower pass"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			exp, err := verifyPass(tt.pass, tt.subject, now, isMember)
			if tt.wantErr == "" {
				if err != nil || !exp.Equal(now.Add(time.Hour)) {
					t.Fatalf("verifyPass = %v, %v; want the expiry and no error", exp, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrNotAdmitted) {
				t.Fatalf("verifyPass error = %v, want one saying %q and wrapping ErrNotAdmitted", err, tt.wantErr)
			}
		})
	}
	if c, ok := passClaimsOf(valid); !ok || c.Expires != now.Add(time.Hour).Unix() || c.Issuer != issuer.String() || c.Subject != follower.String() {
		t.Errorf("passClaimsOf = %+v, %v", c, ok)
	}
}

func TestPassBookKeepsOnePassPerMember(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b := newPassBook(dir)
	if b.valid(time.Now()) {
		t.Fatal("a new data dir has a pass")
	}
	_, follower := newTestIdentity(t)
	keyA, a := newTestIdentity(t)
	keyB, bID := newTestIdentity(t)
	now := time.Now()
	passA, _ := issuePass(keyA, a, follower, now.Add(2*time.Hour))
	passA2, _ := issuePass(keyA, a, follower, now.Add(3*time.Hour))
	passB, _ := issuePass(keyB, bID, follower, now.Add(time.Hour))
	expired, _ := issuePass(keyB, bID, follower, now.Add(-time.Hour))
	for _, p := range []string{passA, passB, passA2} {
		if err := b.add(p); err != nil {
			t.Fatal(err)
		}
	}
	all := func(string) bool { return true }
	if got := b.get(all); got != passA2 {
		t.Errorf("get = the pass expiring at %v, want A's newest", passClaimsOfExp(got))
	}
	// A's issuer was removed from the cluster: B's pass still works.
	if got := b.get(func(id string) bool { return id == bID.String() }); got != passB {
		t.Errorf("with only B a member, get = %q, want B's pass", got)
	}
	if got := b.get(func(string) bool { return false }); got != passA2 {
		t.Errorf("with no issuer known as a member (no configuration learned yet), get = %q, want the newest pass", got)
	}
	if err := b.add(expired); err != nil {
		t.Fatal(err)
	}
	// After a restart: the same passes, the expired one dropped.
	again := newPassBook(dir)
	if got := again.get(func(id string) bool { return id == bID.String() }); got != passB {
		t.Errorf("after an older pass of B, get = %q, want B's newer one kept", got)
	}
	if got := again.get(all); got != passA2 {
		t.Errorf("after a restart get = %q, want A's newest", got)
	}
	if err := b.add("not a pass"); err == nil {
		t.Error("an unreadable pass was kept")
	}
	p := follower
	if !b.due(p, now) {
		t.Error("a pass never presented is not due")
	}
	b.mark(p, now)
	if b.due(p, now.Add(passRefresh/2)) || !b.due(p, now.Add(passRefresh)) {
		t.Error("a pass presented is due again before passRefresh, or not after")
	}
}

// TestPassBookExpiredPasses: a pass file of expired passes (a follower
// stopped longer than their validity) holds no pass to present, and says
// so.
func TestPassBookExpiredPasses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	_, follower := newTestIdentity(t)
	key, issuer := newTestIdentity(t)
	now := time.Now()
	soon, _ := issuePass(key, issuer, follower, now.Add(2*time.Second))
	b := newPassBook(dir)
	if err := b.add(soon); err != nil {
		t.Fatal(err)
	}
	all := func(string) bool { return true }
	if !b.valid(now) || b.get(all) != soon {
		t.Fatal("a pass valid for 2 more seconds is not held")
	}
	// Restarted after the pass expired: the file still has it.
	later := newPassBook(dir)
	if later.valid(now.Add(3 * time.Second)) {
		t.Error("a pass expired at the time asked counts as valid")
	}
	if !later.valid(now) {
		t.Error("the pass kept in the data dir was not read back")
	}
}

// TestPassWatchDecidesLostPasses: when a follower counts its passes lost
// and joins again (rejoinWithoutPass), round after round of presentations.
func TestPassWatchDecidesLostPasses(t *testing.T) {
	t.Parallel()
	type round struct {
		valid             bool
		accepted, refused int
	}
	tests := []struct {
		name   string
		rounds []round
		want   []bool // observe's answer after each round
	}{
		{name: "expired: lost at once", rounds: []round{{false, 0, 0}}, want: []bool{true}},
		{name: "expired, even if a member took it lately", rounds: []round{{false, 2, 0}}, want: []bool{true}},
		{name: "accepted", rounds: []round{{true, 3, 0}, {true, 3, 0}, {true, 3, 0}, {true, 3, 0}}, want: []bool{false, false, false, false}},
		{name: "every member refuses, round after round",
			rounds: []round{{true, 0, 3}, {true, 0, 3}, {true, 0, 3}}, want: []bool{false, false, true}},
		{name: "one member refuses while another admits: not lost",
			rounds: []round{{true, 1, 2}, {true, 1, 2}, {true, 1, 2}, {true, 1, 2}}, want: []bool{false, false, false, false}},
		{name: "no member answers: no refusal, not lost (cut off, not refused)",
			rounds: []round{{true, 0, 0}, {true, 0, 0}, {true, 0, 0}, {true, 0, 0}}, want: []bool{false, false, false, false}},
		{name: "silence neither counts nor resets the refusals",
			rounds: []round{{true, 0, 3}, {true, 0, 0}, {true, 0, 3}, {true, 0, 3}}, want: []bool{false, false, false, true}},
		{name: "an acceptance in between starts the count again",
			rounds: []round{{true, 0, 3}, {true, 0, 3}, {true, 1, 0}, {true, 0, 3}, {true, 0, 3}, {true, 0, 3}},
			want:   []bool{false, false, false, false, false, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var w passWatch
			for i, r := range tt.rounds {
				if got := w.observe(r.valid, r.accepted, r.refused); got != tt.want[i] {
					t.Errorf("round %d %+v: lost = %v, want %v", i, r, got, tt.want[i])
				}
			}
			w.reset()
			if w.observe(true, 0, 1) {
				t.Error("lost right after a reset")
			}
		})
	}
}

func passClaimsOfExp(pass string) time.Time {
	c, _ := passClaimsOf(pass)
	return time.Unix(c.Expires, 0)
}

func TestGateAdmitsFollowersForTheirTime(t *testing.T) {
	t.Parallel()
	g := newPeerGate()
	_, p := newTestIdentity(t)
	if g.allow(p, tailProtocol) || g.isFollower(p) {
		t.Fatal("a stranger passes the gate")
	}
	g.admitFollower(p, time.Hour)
	if !g.allow(p, tailProtocol) || !g.allow(p, forwardProtocol) || !g.isFollower(p) {
		t.Error("an admitted follower does not pass the gate")
	}
	if g.allow(p, p2p.RaftProtocol) {
		t.Error("a follower's pass opens Raft")
	}
	g.admitFollower(p, -time.Second)
	if g.allow(p, tailProtocol) || g.isFollower(p) {
		t.Error("a follower whose admission expired still passes the gate")
	}
}

func TestFollowerMeshAsksOneMemberARound(t *testing.T) {
	t.Parallel()
	b := newPeerBook(peerLabels{})
	members := []string{"a", "b", "c", "d", "e"}
	asked := map[string]int{}
	for range len(members) {
		pick := b.meshPickN(members, followerMeshSample)
		if len(pick) != 1 {
			t.Fatalf("a follower's round asks %d members, want 1", len(pick))
		}
		asked[pick[0]]++
	}
	if len(asked) != len(members) {
		t.Errorf("in %d rounds a follower asked %v, want every member once", len(members), asked)
	}
	if w := b.window(); w != 3*time.Duration(len(members))*meshEvery {
		t.Errorf("live window %v, want three turns of %d rounds", w, len(members))
	}
}

// TestLeaderAnswersFollowWhenTheConfigurationIsFull: a joiner past
// --max-raft-members gets "follow" with the members and a pass signed by
// the leader, which the other members then accept from it (and answer with
// a pass of their own); below the bound a joiner becomes a non-voter.
func TestLeaderAnswersFollowWhenTheConfigurationIsFull(t *testing.T) {
	fn := newFakeNet(t)
	full := func(c *Config) { c.Voters, c.MaxRaftMembers = 3, 0 }
	leader := fn.add("z1", full)
	other := fn.add("z1", full)
	third := fn.add("z1", full) // three voters: the configuration is full
	token, _, err := leader.CreateJoinToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, joiner := newTestIdentity(t)
	join := func(n *Node, token string) memberResult {
		t.Helper()
		req, _ := json.Marshal(memberRequest{Op: "join", ID: joiner.String(), Address: "/ip4/127.0.0.1/tcp/1/p2p/" + joiner.String(), Token: token})
		var res memberResult
		if err := json.Unmarshal(n.serveMember(t.Context(), joiner, req), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := join(leader, "not a token"); res.Error == "" || res.Follow {
		t.Fatalf("a join with a bad token: %+v, want refused", res)
	}
	res := join(leader, token)
	if res.Error != "" || !res.Follow || len(res.Members) != 3 || res.Pass == "" || res.Leader != leader.host.ID().String() {
		t.Fatalf("a join past the bound: %+v, want follow with 3 members, a pass and the leader", res)
	}
	if members, _ := leader.meta.Members(); len(members) != 3 {
		t.Errorf("the follower was added to the configuration: %d members", len(members))
	}
	if _, err := verifyPass(res.Pass, joiner, time.Now(), leader.isMemberID); err != nil {
		t.Fatalf("the pass the leader gave: %v", err)
	}
	if !leader.gate.isFollower(joiner) {
		t.Error("the leader does not admit the follower it answered (its writes come there)")
	}

	// Another member admits the follower on its pass, and answers with one
	// of its own; a pass presented by another peer is refused.
	present := func(n *Node, from peer.ID, pass string) memberResult {
		t.Helper()
		req, _ := json.Marshal(memberRequest{Op: "pass", ID: from.String(), Pass: pass})
		var r memberResult
		if err := json.Unmarshal(n.serveMember(t.Context(), from, req), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	_, stranger := newTestIdentity(t)
	if r := present(other, stranger, res.Pass); r.Error == "" || other.gate.isFollower(stranger) {
		t.Errorf("another peer's pass: %+v, want refused", r)
	}
	r := present(other, joiner, res.Pass)
	if r.Error != "" || !other.gate.isFollower(joiner) {
		t.Fatalf("the follower's pass at another member: %+v, want admitted", r)
	}
	if c, ok := passClaimsOf(r.Pass); !ok || c.Issuer != other.host.ID().String() || c.Subject != joiner.String() {
		t.Errorf("the member answered with pass claims %+v, want its own for the follower", c)
	}

	// The leader removed for good: the member's pass still admits the
	// follower at the third member, the leader's no longer does.
	fn.meta.Lead(other.host.ID().String())
	if err := other.meta.RemoveServer(t.Context(), leader.host.ID().String()); err != nil {
		t.Fatal(err)
	}
	if r := present(third, joiner, res.Pass); r.Error == "" {
		t.Error("a pass issued by a removed member still admits")
	}
	if r := present(third, joiner, r.Pass); r.Error != "" {
		t.Errorf("a pass of a current member: %v", r.Error)
	}

	// With a free non-voter slot the joiner becomes a member.
	fn2 := newFakeNet(t)
	roomy := fn2.add("z1", func(c *Config) { c.Voters, c.MaxRaftMembers = 1, 2 })
	token2, _, err := roomy.CreateJoinToken(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if res := join(roomy, token2); res.Error != "" || res.Follow {
		t.Fatalf("a join below the bound: %+v, want a member", res)
	}
	if !roomy.isMemberID(joiner.String()) {
		t.Error("the joiner below the bound is not a member")
	}
}
