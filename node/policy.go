package node

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/api/oci"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/consensus/state/policy"
)

// The content policy (consensus/state/policy): stored through Raft as the
// setting state.SettingPolicy, enforced by every node's FSM at apply
// (immutable tags, quotas; consensus/state/policy.go), and applied by
// garbage collection (retention; retention.go).

// policyMeta is what the content policy needs of the metadata store;
// consensus.Store has it (node/nodefake does not: such a node keeps no
// policy).
type policyMeta interface {
	settingStore
	Usages(after string, n int) ([]state.RepoUsage, error)
}

var _ policyMeta = (*consensus.Store)(nil)

// maxUsageListed bounds the repositories a usage answer and the metrics
// list.
const maxUsageListed = 1000

func (n *Node) policyMeta() (policyMeta, error) {
	m, ok := n.meta.(policyMeta)
	if !ok {
		return nil, errors.New("node: this node's metadata store keeps no content policy")
	}
	return m, nil
}

// Policy returns the policy document in force, nil if none.
func (n *Node) Policy(ctx context.Context) ([]byte, error) {
	m, err := n.policyMeta()
	if err != nil {
		return nil, err
	}
	if err := n.catchUp(ctx); err != nil {
		return nil, err
	}
	b, err := m.Setting(state.SettingPolicy)
	if errors.Is(err, consensus.ErrNotFound) {
		return nil, nil
	}
	return b, err
}

// SetPolicy validates the document and commits it through Raft.
func (n *Node) SetPolicy(ctx context.Context, doc []byte) error {
	m, err := n.policyMeta()
	if err != nil {
		return err
	}
	if _, err := policy.Parse(doc); err != nil {
		return fmt.Errorf("%w: %w", api.ErrInvalidPolicy, err)
	}
	if len(doc) > state.MaxSettingBytes {
		return fmt.Errorf("%w: the document is %d bytes: at most %d", api.ErrInvalidPolicy, len(doc), state.MaxSettingBytes)
	}
	if err := n.membersApplySetting(state.SettingPolicy); err != nil {
		return fmt.Errorf("node: the policy cannot be stored now: %w", err)
	}
	if err := m.PutSetting(ctx, state.SettingPolicy, doc); err != nil {
		return metaError(err, oci.Unknown, "storing the policy")
	}
	n.log.Info("content policy changed", "bytes", len(doc))
	return nil
}

// PolicyUsage is every repository's usage (at most maxUsageListed) with
// the quota that governs it.
func (n *Node) PolicyUsage(ctx context.Context) (api.PolicyUsage, error) {
	m, err := n.policyMeta()
	if err != nil {
		return api.PolicyUsage{}, err
	}
	if err := n.catchUp(ctx); err != nil {
		return api.PolicyUsage{}, err
	}
	return n.policyUsage(m)
}

func (n *Node) policyUsage(m policyMeta) (api.PolicyUsage, error) {
	out := api.PolicyUsage{Index: n.meta.AppliedIndex(), Repositories: []api.RepoUsage{}}
	var p *policy.Policy
	if b, err := m.Setting(state.SettingPolicy); err == nil {
		p, _ = policy.Parse(b)
	}
	us, err := m.Usages("", maxUsageListed+1)
	if err != nil {
		return out, fmt.Errorf("node: reading repository usage: %w", err)
	}
	if len(us) > maxUsageListed {
		us, out.Truncated = us[:maxUsageListed], true
	}
	for _, u := range us {
		ru := api.RepoUsage{Repo: u.Repo, Bytes: u.Bytes}
		if r := p.Quota(u.Repo); r != nil {
			ru.Quota, ru.Rule = r.Quota, r.N
		}
		out.Repositories = append(out.Repositories, ru)
	}
	return out, nil
}

var _ api.PolicyKeeper = (*Node)(nil)

// usageCollector exports each repository's usage and quota (at most
// maxUsageListed repositories) when scraped.
type usageCollector struct {
	n           *Node
	used, quota *prometheus.Desc
}

func newUsageCollector(n *Node) *usageCollector {
	return &usageCollector{n: n,
		used: prometheus.NewDesc("meshreg_repository_usage_bytes",
			"Bytes a repository holds as quotas count them (manifest bodies and each distinct referenced blob once).", []string{"repository"}, nil),
		quota: prometheus.NewDesc("meshreg_repository_quota_bytes",
			"The quota the content policy sets on a repository.", []string{"repository"}, nil),
	}
}

func (c *usageCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.used; ch <- c.quota }

func (c *usageCollector) Collect(ch chan<- prometheus.Metric) {
	m, err := c.n.policyMeta()
	if err != nil {
		return
	}
	u, err := c.n.policyUsage(m)
	if err != nil {
		return
	}
	for _, r := range u.Repositories {
		ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(r.Bytes), r.Repo)
		if r.Quota > 0 {
			ch <- prometheus.MustNewConstMetric(c.quota, prometheus.GaugeValue, float64(r.Quota), r.Repo)
		}
	}
}
