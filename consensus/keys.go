package consensus

import (
	"encoding/binary"
)

// Storage layout. Everything lives under Config.Dir:
//
//	<Dir>/
//	├── raft/                          badger, SyncWrites: the Raft log and stable store
//	│   ├── l<index>                   log entry (index: uint64 big-endian) → encoded raft.Log
//	│   └── s<key>                     stable store value (raft's keys: CurrentTerm, LastVoteTerm, …;
//	│                                  and meshreg-tail-configuration: what a metadata follower
//	│                                  learned, JSON, follow.go)
//	├── snapshots/                     raft.FileSnapshotStore, the two newest snapshots
//	├── tail-snapshot.tmp              a metadata follower's snapshot while it is received and
//	│                                  checked, before it is restored (follow.go)
//	└── fsm/                           badger: the replicated state (the FSM); its layout
//	                                   is drawn in consensus/state (keys.go)
const (
	prefixLog    = 'l'
	prefixStable = 's'
)

func logKey(index uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixLog}, index)
}

func stableKey(k []byte) []byte { return append([]byte{prefixStable}, k...) }

func encodeUint64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func decodeUint64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}
