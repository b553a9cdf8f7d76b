package consensus

import "github.com/meshreg/meshreg/consensus/state"

// The FSM's tests build log entries and look at the raw database; the
// command and the layout now live in consensus/state. These short names
// keep the tests as they were written.
type command = state.Command

const (
	opPutManifest    = state.OpPutManifest
	opDeleteManifest = state.OpDeleteManifest
	opDeleteTag      = state.OpDeleteTag
	opLinkBlob       = state.OpLinkBlob
	opUnlinkBlob     = state.OpUnlinkBlob
	keyApplied       = state.KeyApplied
)

var (
	decodeCommand = state.DecodeCommand
	bodyKey       = state.BodyKey
	manifestKey   = state.ManifestKey
	tagKey        = state.TagKey
	referrerKey   = state.ReferrerKey
)

// annotationBytes counts keys plus values, as the bounds do.
func annotationBytes(a map[string]string) int {
	n := 0
	for k, v := range a {
		n += len(k) + len(v)
	}
	return n
}
