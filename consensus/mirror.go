package consensus

import (
	"context"

	"github.com/meshreg/meshreg/consensus/state"
)

// MirrorTag is a mirrored tag as the state records it (see state.MirrorTag).
type MirrorTag = state.MirrorTag

// PutMirrorTag records what upstream answered for tag of the mirrored
// repository repo (<ns>/<repository>) at rec.CheckedAt, and points the tag
// at rec.Digest, whose manifest must be in repo already (else the error
// wraps ErrNotFound). Validated before it is proposed and again when
// applied (ErrInvalidCommand names the bound).
func (s *Store) PutMirrorTag(ctx context.Context, repo, tag string, rec MirrorTag) error {
	return s.write(ctx, state.Command{Op: state.OpPutMirrorTag, Repo: repo, Tag: tag, Upstream: rec.Upstream,
		Digest: rec.Digest, MediaType: rec.MediaType, Size: rec.Size, CheckedAt: rec.CheckedAt.UnixNano()})
}

// MirrorTag reads a mirrored tag from local state; ErrNotFound if none.
func (s *Store) MirrorTag(repo, tag string) (MirrorTag, error) {
	return read(s, func(r state.Reader) (MirrorTag, error) { return r.MirrorTag(repo, tag) })
}
