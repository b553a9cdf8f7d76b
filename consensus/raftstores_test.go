package consensus

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/hashicorp/raft"
)

// raftStores is one implementation of raft's LogStore and StableStore under
// the shared suite below. open returns the stores and a close function;
// durable implementations are also closed and reopened on the same dir.
type raftStores struct {
	name    string
	durable bool
	// notFoundError: missing keys give the error "not found", never (zero, nil).
	notFoundError bool
	open          func(t *testing.T, dir string) (raft.LogStore, raft.StableStore, func() error)
}

func TestRaftStores(t *testing.T) {
	t.Parallel()
	impls := []raftStores{
		{name: "badger", durable: true, notFoundError: true, open: func(t *testing.T, dir string) (raft.LogStore, raft.StableStore, func() error) {
			db, err := openBadger(filepath.Join(dir, "raft"), true, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			return &logStore{db: db}, &stableStore{db: db}, db.Close
		}},
		// raft's own in-memory store: the reference the suite is checked against.
		{name: "inmem", open: func(*testing.T, string) (raft.LogStore, raft.StableStore, func() error) {
			s := raft.NewInmemStore()
			return s, s, func() error { return nil }
		}},
	}
	for _, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			t.Parallel()
			testRaftStores(t, impl)
		})
	}
}

func testRaftStores(t *testing.T, impl raftStores) {
	dir := t.TempDir()
	logs, stable, closeFn := impl.open(t, dir)
	defer func() { _ = closeFn() }()

	t.Run("empty", func(t *testing.T) {
		checkBounds(t, logs, 0, 0)
		var l raft.Log
		if err := logs.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Errorf("GetLog(1) on empty log: %v, want ErrLogNotFound", err)
		}
		// raft takes a missing key as (zero, nil) or an error with exactly
		// this text; anything else stops it from starting.
		okMissing := func(zero bool, err error) bool {
			if err == nil {
				return zero && !impl.notFoundError
			}
			return err.Error() == "not found"
		}
		if v, err := stable.Get([]byte("missing")); !okMissing(len(v) == 0, err) {
			t.Errorf("Get(missing) = %q, %v; want error \"not found\"", v, err)
		}
		if v, err := stable.GetUint64([]byte("missing")); !okMissing(v == 0, err) {
			t.Errorf("GetUint64(missing) = %d, %v; want error \"not found\"", v, err)
		}
	})

	// Indexes 1..300 cross byte boundaries (255→256) of the big-endian keys.
	want := map[uint64]*raft.Log{}
	var batch []*raft.Log
	for i := uint64(1); i <= 300; i++ {
		l := sampleLog(i)
		want[i] = l
		if i == 1 {
			if err := logs.StoreLog(l); err != nil {
				t.Fatalf("StoreLog: %v", err)
			}
			continue
		}
		batch = append(batch, l)
		if len(batch) == 64 || i == 300 {
			if err := logs.StoreLogs(batch); err != nil {
				t.Fatalf("StoreLogs: %v", err)
			}
			batch = nil
		}
	}
	if err := stable.Set([]byte("CurrentTerm-bytes"), []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if err := stable.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := stable.SetUint64([]byte("CurrentTerm"), 8); err != nil { // overwrite
		t.Fatal(err)
	}

	t.Run("append and range", func(t *testing.T) {
		checkBounds(t, logs, 1, 300)
		checkLogs(t, logs, want, 1, 300)
	})

	t.Run("delete range", func(t *testing.T) {
		for _, r := range [][2]uint64{{1, 10}, {291, 300}, {100, 99}} { // the last is empty
			if err := logs.DeleteRange(r[0], r[1]); err != nil {
				t.Fatalf("DeleteRange(%d, %d): %v", r[0], r[1], err)
			}
		}
		checkBounds(t, logs, 11, 290)
		for _, i := range []uint64{1, 10, 291, 300, 301} {
			var l raft.Log
			if err := logs.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
				t.Errorf("GetLog(%d) after delete: %v, want ErrLogNotFound", i, err)
			}
		}
		checkLogs(t, logs, want, 11, 290)
	})

	t.Run("stable values", func(t *testing.T) {
		checkStable(t, stable)
	})

	if !impl.durable {
		return
	}
	t.Run("restart", func(t *testing.T) {
		if err := closeFn(); err != nil {
			t.Fatalf("close: %v", err)
		}
		logs, stable, closeFn = impl.open(t, dir)
		checkBounds(t, logs, 11, 290)
		checkLogs(t, logs, want, 11, 290)
		checkStable(t, stable)
	})
}

func sampleLog(i uint64) *raft.Log {
	l := &raft.Log{Index: i, Term: i/100 + 1, Type: raft.LogType(i % 6), Data: bytes.Repeat([]byte{byte(i)}, int(i%7))}
	if i%2 == 0 {
		l.Extensions = []byte("ext")
		l.AppendedAt = time.Unix(1700000000, int64(i))
	}
	return l
}

func checkBounds(t *testing.T, logs raft.LogStore, first, last uint64) {
	t.Helper()
	if got, err := logs.FirstIndex(); err != nil || got != first {
		t.Errorf("FirstIndex = %d, %v; want %d", got, err, first)
	}
	if got, err := logs.LastIndex(); err != nil || got != last {
		t.Errorf("LastIndex = %d, %v; want %d", got, err, last)
	}
}

func checkLogs(t *testing.T, logs raft.LogStore, want map[uint64]*raft.Log, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		var got raft.Log
		if err := logs.GetLog(i, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		w := want[i]
		if got.Index != w.Index || got.Term != w.Term || got.Type != w.Type ||
			!bytes.Equal(got.Data, w.Data) || !bytes.Equal(got.Extensions, w.Extensions) ||
			!got.AppendedAt.Equal(w.AppendedAt) {
			t.Fatalf("GetLog(%d) = %+v, want %+v", i, got, *w)
		}
	}
}

func checkStable(t *testing.T, stable raft.StableStore) {
	t.Helper()
	if v, err := stable.Get([]byte("CurrentTerm-bytes")); err != nil || string(v) != "v1" {
		t.Errorf("Get = %q, %v; want v1", v, err)
	}
	if v, err := stable.GetUint64([]byte("CurrentTerm")); err != nil || v != 8 {
		t.Errorf("GetUint64 = %d, %v; want 8", v, err)
	}
}

func TestDecodeLogRejectsCorrupt(t *testing.T) {
	t.Parallel()
	good := encodeLog(sampleLog(42))
	for name, b := range map[string][]byte{
		"empty":         nil,
		"bad version":   append([]byte{9}, good[1:]...),
		"truncated":     good[:len(good)-3],
		"trailing junk": append(append([]byte{}, good...), 1),
	} {
		var l raft.Log
		if err := decodeLog(b, &l); err == nil {
			t.Errorf("%s: decodeLog accepted corrupt input", name)
		}
	}
}

// TestGetLogOfCorruptEntry: a stored entry that does not decode, or is not
// the entry its key names, is an error from GetLog, not a panic and not
// ErrLogNotFound (which raft would take as a hole it may fill).
func TestGetLogOfCorruptEntry(t *testing.T) {
	t.Parallel()
	db, err := openBadger(t.TempDir(), true, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	logs := &logStore{db: db}
	if err := logs.StoreLogs([]*raft.Log{sampleLog(1), sampleLog(2)}); err != nil {
		t.Fatal(err)
	}
	good := encodeLog(sampleLog(3))
	for name, v := range map[string][]byte{
		"torn":        good[:len(good)/2],
		"garbage":     []byte("\xff\x00garbage"),
		"empty":       {},
		"other index": encodeLog(sampleLog(7)),
	} {
		err := db.Update(func(txn *badger.Txn) error { return txn.Set(logKey(3), v) })
		if err != nil {
			t.Fatal(err)
		}
		var l raft.Log
		err = logs.GetLog(3, &l)
		if !errors.Is(err, errCorruptLog) || errors.Is(err, raft.ErrLogNotFound) {
			t.Errorf("%s: GetLog = %v, want errCorruptLog", name, err)
		}
	}
	var l raft.Log
	if err := logs.GetLog(2, &l); err != nil || l.Index != 2 {
		t.Errorf("GetLog(2) next to a corrupt entry = %+v, %v", l, err)
	}
}

// FuzzDecodeLog: decoding arbitrary bytes never panics, and what decodes
// encodes back to something that decodes the same.
func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog(sampleLog(2)))
	f.Add(encodeLog(&raft.Log{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var l, again raft.Log
		if decodeLog(b, &l) != nil {
			return
		}
		if err := decodeLog(encodeLog(&l), &again); err != nil {
			t.Fatalf("re-decoding: %v", err)
		}
		if again.Index != l.Index || again.Term != l.Term || !bytes.Equal(again.Data, l.Data) || !again.AppendedAt.Equal(l.AppendedAt) {
			t.Fatalf("round trip changed %+v into %+v", l, again)
		}
	})
}
