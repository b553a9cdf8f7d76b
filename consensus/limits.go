package consensus

import "github.com/meshreg/meshreg/consensus/state"

// Bounds of a replicated write, enforced by the proposer and again by the
// FSM when it applies the entry (see consensus/state, limits.go, where they
// are explained).
const (
	MaxTagsPerWrite    = state.MaxTagsPerWrite
	MaxManifestBytes   = state.MaxManifestBytes
	MaxRepoNameLength  = state.MaxRepoNameLength
	MaxTagLength       = state.MaxTagLength
	MaxAnnotations     = state.MaxAnnotations
	MaxAnnotationBytes = state.MaxAnnotationBytes
	MaxBlobSize        = state.MaxBlobSize
)
