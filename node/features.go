package node

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/meshreg/meshreg/consensus/state"
)

// During a rolling upgrade, members of two releases share one Raft log. A
// command of an op the older release does not know fails when an older
// member applies it, and succeeds on the others: their states part for
// good. So each node tells the others, in the user agent libp2p's identify
// exchanges, the newest op it applies, and a command of a newer op than
// the original ones is proposed only when every member applies it, and
// every follower of the metadata the fleet view (fleet.go) knows: they
// apply every entry too. A follower the view missed stops at the entry
// instead (consensus.ErrOlderThanCluster).

// agentOps marks the newest op in a user agent: "meshreg/v1.2.0 ops/7".
const agentOps = " ops/"

// agentSettings marks, before the ops, the settings (OpPutSetting names)
// added since settings began that a release applies:
// "meshreg/v1.3.0 settings/policy ops/7". A setting an older member does
// not know fails there and succeeds on the others, as a new op would.
// (Before the ops, since releases before it read the ops as the tail.)
const agentSettings = " settings/"

// newerSettings are the settings this release applies that the first
// releases with OpPutSetting did not: proposed only when every member
// says it applies them.
var newerSettings = []string{state.SettingPolicy, state.SettingRevokedFollowers}

// userAgent is what this node tells its peers it runs.
func userAgent(version string) string {
	if version == "" {
		version = "dev"
	}
	return "meshreg/" + version + agentSettings + strings.Join(newerSettings, ",") + agentOps + strconv.Itoa(int(state.LastOp))
}

// agentAppliesSetting reports whether a peer's user agent says it
// applies the setting name.
func agentAppliesSetting(agent, name string) bool {
	i := strings.Index(agent, agentSettings)
	if !strings.HasPrefix(agent, "meshreg/") || i < 0 {
		return false
	}
	list, _, _ := strings.Cut(agent[i+len(agentSettings):], " ")
	return slices.Contains(strings.Split(list, ","), name)
}

// membersApplySetting is membersApply for a write of the setting name:
// every member must also apply that setting, and every follower but the
// ones in except (a follower being revoked: one of an older release stops
// at the entry, which is what the revocation is for).
func (n *Node) membersApplySetting(name string, except ...peer.ID) error {
	if err := n.membersApply(state.OpPutSetting); err != nil {
		return err
	}
	if !slices.Contains(newerSettings, name) {
		return nil
	}
	ids, err := n.memberIDs()
	if err != nil {
		return err
	}
	if err := membersApplySetting(n.host, ids, name); err != nil {
		return err
	}
	return n.followersApply("the "+name+" setting", func(agent string) bool { return agentAppliesSetting(agent, name) }, except...)
}

func membersApplySetting(a agents, members []string, name string) error {
	for _, m := range members {
		id, err := peer.Decode(m)
		if err != nil || id == a.ID() {
			continue
		}
		if agent := a.AgentVersion(id); !agentAppliesSetting(agent, name) {
			return fmt.Errorf("member %s runs %q, a release that does not apply the %s setting: "+
				"upgrade every member (or remove the old one) first", id, agent, name)
		}
	}
	return nil
}

// agentLastOp reads the newest op a peer's user agent says it applies; a
// release before user agents said so applies the original ops only
// (through OpUnlinkBlob).
func agentLastOp(agent string) state.Op {
	i := strings.LastIndex(agent, agentOps)
	if !strings.HasPrefix(agent, "meshreg/") || i < 0 {
		return state.OpUnlinkBlob
	}
	n, err := strconv.Atoi(agent[i+len(agentOps):])
	if err != nil || n < int(state.OpUnlinkBlob) || n > 255 {
		return state.OpUnlinkBlob
	}
	return state.Op(n)
}

// agents tells what a peer runs (p2p.Host.AgentVersion).
type agents interface {
	ID() peer.ID
	AgentVersion(p peer.ID) string
}

// membersApply returns nil when every member of the Raft configuration
// applies op, and every follower of the metadata the fleet view knows,
// and otherwise an error naming one that does not (or that this node never
// heard from, or a member that could not be asked for its followers) and
// what to do.
func (n *Node) membersApply(op state.Op) error {
	if op <= state.OpUnlinkBlob {
		return nil
	}
	ids, err := n.memberIDs()
	if err != nil {
		return err
	}
	if err := membersApply(n.host, ids, op); err != nil {
		return err
	}
	return n.followersApply(fmt.Sprintf("op %d", op), func(agent string) bool { return agentLastOp(agent) >= op })
}

// followersApply checks the followers of the fleet view (reused for
// fleetTTL) with applies.
func (n *Node) followersApply(what string, applies func(agent string) bool, except ...peer.ID) error {
	ctx, cancel := context.WithTimeout(n.ctx, fleetAskTimeout+time.Second)
	defer cancel()
	view, err := n.Fleet(ctx)
	if err != nil {
		return fmt.Errorf("listing the followers of the metadata: %w", err)
	}
	view.Nodes = slices.DeleteFunc(slices.Clone(view.Nodes), func(nd FleetNode) bool {
		return slices.ContainsFunc(except, func(p peer.ID) bool { return p.String() == nd.ID })
	})
	return fleetApplies(view, what, applies)
}

// fleetApplies returns nil when every follower in view applies the change
// (what names it), and an error naming the first that does not. A partial
// view fails the check closed (an older follower may be missing from it),
// naming a member that could not be asked if there is one. A member that
// could not be asked while others answered does not: every follower
// presents its pass to every member, so the others list its followers
// too (fleet.go).
func fleetApplies(view Fleet, what string, applies func(agent string) bool) error {
	if view.Partial {
		if len(view.Unreachable) > 0 {
			id := slices.Min(slices.Collect(maps.Keys(view.Unreachable)))
			return fmt.Errorf("member %s could not be asked which followers of the metadata it knows (%s), nor any other: "+
				"one of an older release would fail on this change (%s); retry once a member answers",
				id, view.Unreachable[id], what)
		}
		return fmt.Errorf("a member knows more followers of the metadata than it could list: "+
			"one of an older release would fail on this change (%s)", what)
	}
	for _, nd := range view.Nodes {
		if nd.Role != "follower" || applies(nd.Agent) {
			continue
		}
		return fmt.Errorf("follower %s (tailing from %s) runs %s, a release that cannot apply this change (%s): "+
			"upgrade every follower (or stop it) first", nd.ID, nd.Source, cmp.Or(nd.Agent, "a release this member did not identify"), what)
	}
	return nil
}

func membersApply(a agents, members []string, op state.Op) error {
	for _, m := range members {
		id, err := peer.Decode(m)
		if err != nil || id == a.ID() {
			continue
		}
		agent := a.AgentVersion(id)
		if agentLastOp(agent) >= op {
			continue
		}
		runs := agent
		if runs == "" {
			runs = "nothing this node has heard of (it was not reachable since this node started)"
		}
		return fmt.Errorf("member %s runs %s, a release that cannot apply this change: "+
			"upgrade every member (or remove the old one) first", id, runs)
	}
	return nil
}

// memberIDs are the ids of the Raft configuration's members.
func (n *Node) memberIDs() ([]string, error) {
	members, err := n.meta.Members()
	if err != nil {
		return nil, fmt.Errorf("reading the cluster's members: %w", err)
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = m.ID
	}
	return ids, nil
}
