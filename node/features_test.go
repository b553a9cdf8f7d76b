package node

import (
	"strings"
	"testing"

	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/node/nodefake"
)

func TestUserAgentCarriesTheNewestOp(t *testing.T) {
	for _, tc := range []struct {
		agent string
		want  state.Op
	}{
		{userAgent("v1.2.0"), state.LastOp},
		{userAgent(""), state.LastOp},
		{"meshreg/v0.9.0 ops/6", state.OpPutSetting},
		// Releases before user agents said so, other programs, garbage.
		{"", state.OpUnlinkBlob},
		{"github.com/meshreg/meshreg", state.OpUnlinkBlob},
		{"go-libp2p/0.51.0 ops/99", state.OpUnlinkBlob},
		{"meshreg/v1 ops/", state.OpUnlinkBlob},
		{"meshreg/v1 ops/-3", state.OpUnlinkBlob},
		{"meshreg/v1 ops/1", state.OpUnlinkBlob},
		{"meshreg/v1 ops/100000", state.OpUnlinkBlob},
	} {
		if got := agentLastOp(tc.agent); got != tc.want {
			t.Errorf("agentLastOp(%q) = %d, want %d", tc.agent, got, tc.want)
		}
	}
}

// TestNewOpsWaitForEveryMember: during a rolling upgrade a command an
// older member cannot apply is not proposed (its state would part from
// the others'); the original ops always are.
func TestNewOpsWaitForEveryMember(t *testing.T) {
	net := nodefake.NewNetwork()
	var ts []*nodefake.Transport
	var ids []string
	for range 3 {
		tr, err := net.NewTransport()
		if err != nil {
			t.Fatal(err)
		}
		ts = append(ts, tr)
		ids = append(ids, tr.ID().String())
	}
	self := ts[0]
	if err := membersApply(self, ids, state.LastOp); err != nil {
		t.Fatalf("every member runs this release: %v", err)
	}

	ts[2].SetAgent("meshreg/v0.8.0 ops/5")
	err := membersApply(self, ids, state.OpGCSweep)
	if err == nil || !strings.Contains(err.Error(), ts[2].ID().String()) || !strings.Contains(err.Error(), "meshreg/v0.8.0") ||
		!strings.Contains(err.Error(), "upgrade every member") {
		t.Fatalf("an older member: err = %v, want one naming it, what it runs and what to do", err)
	}
	if err := membersApply(self, ids, state.OpDeleteTag); err != nil {
		t.Fatalf("an original op with an older member: %v", err)
	}

	// A member this node never heard from may be older.
	ts[2].SetAgent("meshreg/v2.0.0 ops/200")
	stranger, err := nodefake.NewNetwork().NewTransport()
	if err != nil {
		t.Fatal(err)
	}
	if err := membersApply(self, append(ids, stranger.ID().String()), state.OpPutSetting); err == nil ||
		!strings.Contains(err.Error(), "not reachable") {
		t.Fatalf("a member never heard from: err = %v", err)
	}
}

// TestNewSettingsWaitForEveryMember: the policy setting is written only
// when every member says it applies it; a release that says nothing of
// settings (or other ones) does not.
func TestNewSettingsWaitForEveryMember(t *testing.T) {
	if !agentAppliesSetting(userAgent("v1.3.0"), state.SettingPolicy) {
		t.Fatalf("this release's agent %q does not say it applies the policy", userAgent("v1.3.0"))
	}
	if got := agentLastOp(userAgent("v1.3.0")); got != state.LastOp {
		t.Fatalf("the settings marker hides the ops: %d", got)
	}
	for _, agent := range []string{"", "meshreg/v1.2.0 ops/7", "meshreg/v1.3.0 settings/other ops/7", "go-libp2p settings/policy"} {
		if agentAppliesSetting(agent, state.SettingPolicy) {
			t.Errorf("agent %q applies the policy setting", agent)
		}
	}
	net := nodefake.NewNetwork()
	var ts []*nodefake.Transport
	var ids []string
	for range 3 {
		tr, err := net.NewTransport()
		if err != nil {
			t.Fatal(err)
		}
		tr.SetAgent(userAgent("v1.3.0"))
		ts = append(ts, tr)
		ids = append(ids, tr.ID().String())
	}
	if err := membersApplySetting(ts[0], ids, state.SettingPolicy); err != nil {
		t.Fatalf("every member runs this release: %v", err)
	}
	ts[1].SetAgent("meshreg/v1.2.0 ops/7")
	if err := membersApplySetting(ts[0], ids, state.SettingPolicy); err == nil || !strings.Contains(err.Error(), ts[1].ID().String()) ||
		!strings.Contains(err.Error(), "does not apply the policy setting") {
		t.Fatalf("an older member: err = %v", err)
	}
}
