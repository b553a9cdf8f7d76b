package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshreg/meshreg/api"
	"github.com/meshreg/meshreg/consensus"
	"github.com/meshreg/meshreg/consensus/state"
	"github.com/meshreg/meshreg/consensus/state/policy"
)

// applyRetention is the first step of a collection: it reads what the
// content policy's retention rules delete (state.View.Retention, at most
// api.MaxRetentionPerCollection) and, unless dryRun, deletes it through
// Raft as ordinary tag and manifest deletes, one by one, so the mark that
// follows no longer sees them. A delete that a write raced (the tag moved
// or went, an immutable tag now protects it) is skipped and counted; the
// next collection decides again.
func (n *Node) applyRetention(ctx context.Context, dryRun bool, progress func(string)) ([]api.RetentionDeletion, int, error) {
	var plan []policy.Deletion
	err := n.gc.meta.View(func(v *state.View) error {
		p, err := v.Policy()
		if err != nil || p == nil {
			return err
		}
		plan, err = v.Retention(p, time.Now(), api.MaxRetentionPerCollection)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("reading what retention deletes: %w", err)
	}
	out := make([]api.RetentionDeletion, 0, len(plan))
	for _, d := range plan {
		out = append(out, api.RetentionDeletion{Repo: d.Repo, Tag: d.Tag, Digest: d.Digest.String(), Reason: d.Reason})
	}
	if dryRun || len(plan) == 0 {
		return out, 0, nil
	}
	progress(fmt.Sprintf("retention: deleting %d tags and untagged manifests", len(plan)))
	done, skipped := out[:0], 0
	for i, d := range plan {
		var err error
		if d.Tag != "" {
			err = n.meta.DeleteTag(ctx, d.Repo, d.Tag)
		} else {
			err = n.meta.DeleteManifest(ctx, d.Repo, d.Digest)
		}
		switch {
		case err == nil:
			done = append(done, out[i])
		case errors.Is(err, consensus.ErrNotFound), errors.Is(err, consensus.ErrPolicyDenied):
			skipped++
			n.log.Info("retention: a delete was raced by a write; the next collection decides again",
				"repository", d.Repo, "tag", d.Tag, "digest", d.Digest, "err", err)
		default:
			return done, skipped, fmt.Errorf("retention: deleting %s %s: %w (deletions before it are applied)", d.Repo, d.Tag+string(d.Digest), err)
		}
	}
	n.log.Info("retention applied", "deleted", len(done), "skipped", skipped)
	return done, skipped, nil
}
