package state

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Storage layout of the state, a badger database (the store keeps it in
// <Dir>/fsm/):
//
//	fsm/
//	├── a                          applied Raft index (uint64 big-endian)
//	├── b<digest>                  manifest bytes, stored once per digest
//	├── c<digest>                  repositories holding the manifest (uint64 big-endian)
//	├── r<repo>                    repository exists (empty value)
//	├── m<repo>·<digest>           manifest in repository → manifestMeta (JSON)
//	├── t<repo>·<tag>              tag → digest
//	├── g<repo>·<digest>·<tag>     reverse tag index: tags pointing at digest (empty value)
//	├── l<repo>·<digest>           blob link → size (uint64 big-endian)
//	├── f<repo>·<subject>·<digest> referrer → ocispec.Descriptor (JSON)
//	├── s<name>                    cluster setting → its body (settings.go)
//	├── p<repo>·<tag>              tag push: index of the latest put naming it, proposer time
//	│                              (2 × uint64, policy.go; retention orders and ages tags by it)
//	├── v<repo>                    repository usage in bytes (uint64, policy.go)
//	├── q<repo>·<digest>           blob in the usage: manifests referencing it, linked size
//	│                              (2 × uint64, policy.go)
//	├── u<repo>·<tag>              mirrored tag → MirrorTag (JSON): what the
//	│                              upstream answered and when (mirror.go)
//	├── k<digest>                  last touch: index of the latest link or put naming it,
//	│                              proposer time of the latest link (2 × uint64, gc.go)
//	├── x<digest>                  tombstone: index of the OpGCSweep that collected it
//	├── y<index><digest>           tombstone log by index (index: 8 bytes big-endian)
//	│                              → GC start time, cutoff, mark index (3 × uint64)
//	└── X                          GC floor: highest index of a pruned tombstone
//
// "·" is the byte 0x00, which no repository name, tag or digest may contain
// (writes with one are refused), so a prefix such as t<repo>· never matches
// another repository, and badger's byte order is the lexical order of tags
// and repository names that listing needs.
//
// The key builders are exported for tests and tools that look at the raw
// database; everything else goes through Apply, Reader and View.
const (
	// KeyApplied holds the applied Raft index.
	KeyApplied     = "a"
	prefixBody     = 'b'
	prefixRefCount = 'c'
	prefixRepo     = 'r'
	prefixManifest = 'm'
	prefixTag      = 't'
	prefixTagByDig = 'g'
	prefixBlobLink = 'l'
	prefixReferrer = 'f'
	prefixSetting  = 's'
	prefixTagPush  = 'p'
	prefixUsage    = 'v'
	prefixUsedBlob = 'q'
	prefixTouch    = 'k'
	prefixTomb     = 'x'
	prefixTombLog  = 'y'
	prefixMirror   = 'u'
	// KeyGCFloor holds the highest index of a tombstone pruned (gc.go).
	KeyGCFloor    = "X"
	sep           = 0x00
	maxNameLength = 4096 // repository names and tags; far above what the API accepts
)

// key joins a one-byte prefix and parts separated by sep.
func key(prefix byte, parts ...string) []byte {
	n := 1
	for _, p := range parts {
		n += len(p) + 1
	}
	k := make([]byte, 1, n)
	k[0] = prefix
	for i, p := range parts {
		if i > 0 {
			k = append(k, sep)
		}
		k = append(k, p...)
	}
	return k
}

// keyPrefix is key(prefix, parts...) followed by sep: the prefix of every
// key one level below parts.
func keyPrefix(prefix byte, parts ...string) []byte {
	return append(key(prefix, parts...), sep)
}

func BodyKey(d digest.Digest) []byte     { return key(prefixBody, string(d)) }
func refCountKey(d digest.Digest) []byte { return key(prefixRefCount, string(d)) }
func repoKey(repo string) []byte         { return key(prefixRepo, repo) }
func ManifestKey(repo string, d digest.Digest) []byte {
	return key(prefixManifest, repo, string(d))
}
func TagKey(repo, tag string) []byte { return key(prefixTag, repo, tag) }
func tagByDigestKey(repo string, d digest.Digest, tag string) []byte {
	return key(prefixTagByDig, repo, string(d), tag)
}
func mirrorTagKey(repo, tag string) []byte            { return key(prefixMirror, repo, tag) }
func blobLinkKey(repo string, d digest.Digest) []byte { return key(prefixBlobLink, repo, string(d)) }
func ReferrerKey(repo string, subject, d digest.Digest) []byte {
	return key(prefixReferrer, repo, string(subject), string(d))
}

func settingKey(name string) []byte { return key(prefixSetting, name) }

func touchKey(d digest.Digest) []byte { return key(prefixTouch, string(d)) }
func tombKey(d digest.Digest) []byte  { return key(prefixTomb, string(d)) }
func tombLogKey(index uint64, d digest.Digest) []byte {
	return append(binary.BigEndian.AppendUint64([]byte{prefixTombLog}, index), d...)
}

// validName reports whether s can be part of a key: non-empty, bounded and
// free of the separator byte.
func validName(s string) bool {
	return s != "" && len(s) <= maxNameLength && !strings.ContainsRune(s, sep)
}

// EncodeUint64 and DecodeUint64 are the encoding of the applied index,
// reference counts and blob sizes.
func EncodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func DecodeUint64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// knownPrefixes are the prefixes of the layout above.
var knownPrefixes = string([]byte{prefixBody, prefixRefCount, prefixRepo, prefixManifest, prefixTag, prefixTagByDig,
	prefixBlobLink, prefixReferrer, prefixSetting, prefixTagPush, prefixUsage, prefixUsedBlob, prefixTouch, prefixTomb,
	prefixTombLog, prefixMirror})

// UnknownKey says what a key of a state's database is that this release
// does not know ("" when it knows it): a key of a prefix outside the
// layout above, or a setting not in the closed set. A state (a snapshot)
// with one was written by a newer release, whose new records this one
// would keep without applying their rules.
func UnknownKey(k []byte) string {
	switch {
	case string(k) == KeyApplied || string(k) == KeyGCFloor:
		return ""
	case len(k) == 0:
		return "an empty key"
	case k[0] == prefixSetting:
		if name := string(k[1:]); !KnownSetting(name) {
			return fmt.Sprintf("the setting %q", truncate(name))
		}
		return ""
	case strings.IndexByte(knownPrefixes, k[0]) >= 0:
		return ""
	}
	return fmt.Sprintf("records of kind %q", k[:1])
}
