package scenario

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meshreg/meshreg/testnet"
	"github.com/meshreg/meshreg/testnet/containers"
)

// A rolling upgrade: the scenario's nodes start with the image of its
// previous revision, and each "upgrade" event replaces one node's
// container by one of the current image, with the same name, arguments
// and data volume (so the same identity), once the old one has stopped
// gracefully. The load goes on meanwhile against the other nodes.

// maxPreUpgradeChecked bounds how many pushes acknowledged before the
// first upgrade are pulled through each upgraded node.
const maxPreUpgradeChecked = 30

// dataFormatPath is where the node writes the versions of its data
// formats (in the image, the data dir is /data).
const dataFormatPath = "/data/FORMAT"

// UpgradeReport is what the upgrades did and found.
type UpgradeReport struct {
	FromRevision string `json:"from_revision"`
	// VersionBefore and VersionAfter are what `meshreg version` prints
	// in the previous and the current image.
	VersionBefore string `json:"version_before"`
	VersionAfter  string `json:"version_after"`
	// PushesBefore is how many pushes were acknowledged before the first
	// upgrade: the content every upgraded node must serve.
	PushesBefore int           `json:"pushes_before_first_upgrade"`
	Steps        []UpgradeStep `json:"steps"`
}

// UpgradeStep is the upgrade of one node.
type UpgradeStep struct {
	Node          string  `json:"node"`
	NodeID        string  `json:"node_id"`
	IdentityKept  bool    `json:"identity_kept"`
	AddressBefore string  `json:"raft_address_before"`
	AddressAfter  string  `json:"raft_address_after"`
	BlobsBefore   int64   `json:"blobs_before"` // held before the stop
	BlobsAfter    int64   `json:"blobs_after"`  // held once ready on the new image
	StopSeconds   float64 `json:"stop_seconds"`
	ReadySeconds  float64 `json:"ready_seconds"`  // from the new start to /readyz 200
	MemberSeconds float64 `json:"member_seconds"` // from the new start to being a member again
	// PreUpgradeServed is how many of the pushes acknowledged before the
	// first upgrade the node served in full (of PreUpgradeChecked).
	PreUpgradeServed  int `json:"pre_upgrade_served"`
	PreUpgradeChecked int `json:"pre_upgrade_checked"`
	// Format is the data dir's FORMAT file after the upgrade, or
	// "absent" when the current build does not write one.
	Format string `json:"format"`
	Error  string `json:"error,omitempty"`
}

// recordVersions asks both images what `meshreg version` prints.
func (r *run) recordVersions(ctx context.Context) {
	u := &UpgradeReport{FromRevision: r.s.Previous}
	var err error
	if u.VersionBefore, err = r.imageVersion(ctx, r.opt.PreviousImage); err != nil {
		r.rep.fail("version of the previous image: %v", err)
	}
	if u.VersionAfter, err = r.imageVersion(ctx, r.opt.Image); err != nil {
		r.rep.fail("version of the current image: %v", err)
	}
	r.repMu.Lock()
	r.rep.Upgrade = u
	r.repMu.Unlock()
	r.log.Info("versions", "before", u.VersionBefore, "after", u.VersionAfter)
}

func (r *run) imageVersion(ctx context.Context, image string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := r.d.RunCLI(ctx, nil, "run", "--rm", "--network", "none", "--label", containers.RunLabel+"="+r.d.RunID(), image, "version")
	return strings.TrimSpace(out), err
}

// upgrade replaces n's container by one of the current image on the same
// data and waits until n is ready and a member again. It returns every
// problem it found: a lost identity, blobs or metadata the new binary did
// not read, pre-upgrade content it does not serve, a bad FORMAT file.
func (r *run) upgrade(ctx context.Context, n *node) error {
	if st := r.cl.stateOf(n); st != stateRunning {
		return fmt.Errorf("%s is %s: only a running node is upgraded", n.spec.Name, st)
	}
	if n.image == r.opt.Image {
		return fmt.Errorf("%s runs the current image already", n.spec.Name)
	}
	pre := r.preUpgradePushes()
	step := UpgradeStep{Node: n.spec.Name, Format: "absent"}
	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	defer func() {
		if err := errors.Join(problems...); err != nil {
			step.Error = err.Error()
		}
		r.repMu.Lock()
		r.rep.Upgrade.Steps = append(r.rep.Upgrade.Steps, step)
		r.repMu.Unlock()
	}()

	before, err := r.cl.status(ctx, n)
	if err != nil {
		bad("status of %s before its upgrade: %w", n.spec.Name, err)
		return errors.Join(problems...)
	}
	step.NodeID, step.AddressBefore, step.BlobsBefore = before.NodeID, before.RaftAddress, before.Blobs.Count
	suffrage := suffrageOf(before, before.NodeID)

	r.cl.setState(n, stateStopped) // out of the load first
	old := n.c
	began := time.Now()
	if err := old.Stop(ctx, stopTimeout); err != nil {
		bad("%w", err)
		return errors.Join(problems...)
	}
	step.StopSeconds = time.Since(began).Seconds()
	if st, err := old.State(ctx); err != nil || st.ExitCode != 0 {
		bad("%s (previous image) after a graceful stop: exit code %d, %v; want 0", n.spec.Name, st.ExitCode, err)
	}
	if logs, err := old.Logs(ctx); err == nil {
		n.logs += logs + "\n--- testnet: upgraded to " + r.opt.Image + " ---\n"
	}
	// The old container keeps the data volume; its name goes to the new
	// one, so that names resolve as before.
	if err := old.Rename(ctx, r.containerName(n)+"-previous"); err != nil {
		bad("%w", err)
		return errors.Join(problems...)
	}
	began = time.Now()
	if err := r.runContainer(ctx, n, r.opt.Image, n.args, old.ID); err != nil {
		bad("starting the current image on %s's data: %w", n.spec.Name, err)
		return errors.Join(problems...)
	}
	if err := r.applyNetwork(ctx); err != nil {
		bad("%w", err)
	}
	err = r.cl.waitReady(ctx, n, 60*time.Second)
	step.ReadySeconds = time.Since(began).Seconds()
	r.cl.setState(n, stateRunning)
	if err != nil {
		bad("after the upgrade: %w", err)
		return errors.Join(problems...)
	}
	after, err := r.cl.status(ctx, n)
	if err != nil {
		bad("status of %s after its upgrade: %w", n.spec.Name, err)
		return errors.Join(problems...)
	}
	step.AddressAfter, step.BlobsAfter = after.RaftAddress, after.Blobs.Count
	step.IdentityKept = after.NodeID == before.NodeID
	if !step.IdentityKept {
		bad("%s came back as %s, was %s: the new binary did not read its identity from the data dir", n.spec.Name, after.NodeID, before.NodeID)
	}
	if after.Blobs.Count < before.Blobs.Count {
		bad("%s holds %d blobs after the upgrade, %d before: the new binary did not read the old blob layout", n.spec.Name, after.Blobs.Count, before.Blobs.Count)
	}
	var last string
	if !poll(ctx, 60*time.Second, 250*time.Millisecond, func() bool {
		st, err := r.cl.status(ctx, n)
		if err != nil {
			last = err.Error()
			return false
		}
		if got := suffrageOf(st, before.NodeID); st.Raft.LeaderID == "" || got != suffrage {
			last = fmt.Sprintf("leader %q, %s is %q in its view, want %q", st.Raft.LeaderID, n.spec.Name, got, suffrage)
			return false
		}
		return true
	}) {
		bad("%s is not a member (%s) again 60s after its upgrade: %s", n.spec.Name, suffrage, last)
	}
	step.MemberSeconds = time.Since(began).Seconds()

	// The metadata and blobs written by the previous binary, served by
	// the new one.
	step.PreUpgradeChecked = len(pre)
	for _, p := range pre {
		if _, err := pullImage(ctx, n, p); err != nil {
			bad("pushed before the upgrade, not served by the upgraded %s: %w", n.spec.Name, err)
			continue
		}
		step.PreUpgradeServed++
	}
	format, err := r.dataFormat(ctx, n)
	switch {
	case err != nil:
		bad("%s: %w", n.spec.Name, err)
	case format != "":
		step.Format = format
	}
	r.log.Info("upgraded", "node", n.spec.Name, "ready_s", step.ReadySeconds, "blobs_before", step.BlobsBefore, "blobs_after", step.BlobsAfter, "problems", len(problems))
	return errors.Join(problems...)
}

// preUpgradePushes returns (at most maxPreUpgradeChecked of) the pushes
// acknowledged before the first upgrade, recording their number at the
// first call.
func (r *run) preUpgradePushes() []pushed {
	r.repMu.Lock()
	defer r.repMu.Unlock()
	if r.preUpgrade == nil {
		r.preUpgrade = r.hist.allAcked()
		r.rep.Upgrade.PushesBefore = len(r.preUpgrade)
	}
	return r.preUpgrade[:min(len(r.preUpgrade), maxPreUpgradeChecked)]
}

// suffrageOf is id's suffrage in st's view of the configuration, or "".
func suffrageOf(st testnet.NodeStatus, id string) string {
	for _, m := range st.Raft.Members {
		if m.ID == id {
			return m.Suffrage
		}
	}
	return ""
}

// dataFormat reads n's FORMAT file, checks it and returns it; "" when
// there is none (a build that does not write one).
func (r *run) dataFormat(ctx context.Context, n *node) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := r.d.RunCLI(ctx, nil, "cp", n.c.ID+":"+dataFormatPath, "-")
	if err != nil {
		if strings.Contains(err.Error(), "No such container:path") || strings.Contains(err.Error(), "Could not find the file") {
			return "", nil
		}
		return "", fmt.Errorf("reading %s: %w", dataFormatPath, err)
	}
	return formatFromTar(out)
}

// formatFromTar checks the FORMAT file in the tar stream `docker cp`
// writes and returns it.
func formatFromTar(stream string) (string, error) {
	tr := tar.NewReader(strings.NewReader(stream))
	if _, err := tr.Next(); err != nil {
		return "", fmt.Errorf("reading %s: docker cp gave no file: %w", dataFormatPath, err)
	}
	b, err := io.ReadAll(io.LimitReader(tr, 64<<10))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", dataFormatPath, err)
	}
	return strings.TrimSpace(string(b)), checkFormat(b)
}

// checkFormat checks a FORMAT file: the versions of the blob store and
// metadata layouts (at least 1) and the build that wrote them.
func checkFormat(b []byte) error {
	var f struct {
		Blobstore *int   `json:"blobstore"`
		Metadata  *int   `json:"metadata"`
		WrittenBy string `json:"written_by"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%s %q is not JSON: %w", dataFormatPath, b, err)
	}
	if f.Blobstore == nil || *f.Blobstore < 1 || f.Metadata == nil || *f.Metadata < 1 || f.WrittenBy == "" {
		return fmt.Errorf("%s %q: want blobstore and metadata versions (at least 1) and written_by", dataFormatPath, b)
	}
	return nil
}

// checkUpgrade is the final check of a scenario with a previous revision:
// a leader, and every node a member (with the voters a cluster of that
// size settles on).
func (r *run) checkUpgrade(ctx context.Context, running []*node) {
	want := testnet.ExpectedVoters(len(running), r.voters())
	var last string
	if !poll(ctx, 30*time.Second, 500*time.Millisecond, func() bool {
		if last = r.cl.agreement(ctx, len(running)); last != "" {
			return false
		}
		for _, n := range running {
			st, err := r.cl.status(ctx, n)
			if err != nil {
				last = err.Error()
				return false
			}
			if st.Voters() != want {
				last = fmt.Sprintf("%s counts %d voters, want %d", n.spec.Name, st.Voters(), want)
				return false
			}
		}
		return true
	}) {
		r.rep.fail("after the upgrades: not one leader with all %d nodes members (%d voters): %s", len(running), want, last)
	}
	for _, n := range running {
		if n.image != r.opt.Image {
			r.note(fmt.Sprintf("%s still runs the previous image %s", n.spec.Name, n.image))
		}
	}
}

func (r *Report) upgradeMarkdown(b *strings.Builder) {
	u := r.Upgrade
	if u == nil {
		return
	}
	fmt.Fprintf(b, "\n## Upgrade\n\nfrom revision %s: `meshreg version` %q → %q; %d pushes acknowledged before the first upgrade\n\n", u.FromRevision, u.VersionBefore, u.VersionAfter, u.PushesBefore)
	b.WriteString("| node | identity kept | raft address before → after | blobs before → after | stop s | ready s | member s | pre-upgrade pushes served | FORMAT | error |\n| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
	for _, s := range u.Steps {
		fmt.Fprintf(b, "| %s | %t | %s → %s | %d → %d | %.1f | %.1f | %.1f | %d/%d | %s | %s |\n", s.Node, s.IdentityKept, s.AddressBefore, s.AddressAfter,
			s.BlobsBefore, s.BlobsAfter, s.StopSeconds, s.ReadySeconds, s.MemberSeconds, s.PreUpgradeServed, s.PreUpgradeChecked,
			cell(s.Format), cell(s.Error))
	}
}

// cell makes s fit in one Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", "<br>").Replace(s)
}
