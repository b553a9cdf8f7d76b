package datadir

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// FormatFile is the name of the file, inside a data dir, that records the
// layout versions of its stores.
const FormatFile = "FORMAT"

// The layout versions this binary reads and writes. A change to the blob
// directory tree or upload files bumps BlobstoreVersion; a change to the
// badger keys, the FSM's encoding or the Raft log/stable stores bumps
// MetadataVersion. Version 1 is the layout of every release before FORMAT
// existed.
const (
	BlobstoreVersion = 1
	MetadataVersion  = 1
)

// ErrTooNew is wrapped by CheckFormat's error when the data dir was
// written in a layout newer than this binary reads.
var ErrTooNew = errors.New("data dir layout newer than this meshreg reads")

// ErrNotRecorded is wrapped by CheckFormat's error when FORMAT could not be
// written but what it would record changes no layout version (only
// written_by, or a missing file that means version 1 anyway): the data dir
// is usable, and the caller may go on after saying so. A full disk must not
// keep a node from starting to serve reads.
var ErrNotRecorded = errors.New("data dir format not recorded")

// Format is the content of <data dir>/FORMAT. The keys are stable: other
// tools (the upgrade scenario) read them.
type Format struct {
	// Blobstore and Metadata are the layout versions of the blob store and
	// of the metadata store.
	Blobstore int `json:"blobstore"`
	Metadata  int `json:"metadata"`
	// WrittenBy is the version of the last meshreg that opened the data
	// dir (and wrote this file).
	WrittenBy string `json:"written_by"`
}

// Current is the format this binary (of the given version) writes.
func Current(version string) Format {
	return Format{Blobstore: BlobstoreVersion, Metadata: MetadataVersion, WrittenBy: version}
}

// ReadFormat reads dir's FORMAT file; ok is false when there is none.
func ReadFormat(dir string) (f Format, ok bool, err error) {
	path := filepath.Join(dir, FormatFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Format{}, false, nil
	}
	if err != nil {
		return Format{}, false, fmt.Errorf("data dir %s: reading %s: %w", dir, FormatFile, err)
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Blobstore < 1 || f.Metadata < 1 {
		if err == nil {
			err = errors.New("a layout version is missing or below 1")
		}
		return Format{}, false, fmt.Errorf("data dir %s: %s is not a format record meshreg wrote (%v): restore it, "+
			"or remove it if the data dir was written by a release before %s existed", dir, path, err, FormatFile)
	}
	return f, true, nil
}

// CheckFormat makes sure a meshreg of the given version can use dir, and
// records that it does. A data dir without FORMAT (new, or written by a
// release before FORMAT existed, which used layout version 1) gets the
// current one. A data dir whose blob store or metadata layout is newer
// than this binary reads is refused with an error wrapping ErrTooNew that
// names both versions and the meshreg that wrote it; nothing in the data
// dir is changed then. Call it with the data dir's Lock held, before any
// store opens.
func CheckFormat(dir, version string) (Format, error) {
	f, ok, err := ReadFormat(dir)
	if err != nil {
		return Format{}, err
	}
	if ok && (f.Blobstore > BlobstoreVersion || f.Metadata > MetadataVersion) {
		writer := f.WrittenBy
		if writer == "" {
			writer = "an unknown version"
		}
		return f, fmt.Errorf("data dir %s was written by meshreg %s in a newer layout (blob store v%d, metadata v%d) "+
			"than this meshreg %s reads (blob store up to v%d, metadata up to v%d): run meshreg %s or newer on it, "+
			"or pass another --data-dir: %w",
			dir, writer, f.Blobstore, f.Metadata, version, BlobstoreVersion, MetadataVersion, writer, ErrTooNew)
	}
	cur := Current(version)
	if ok && f == cur {
		return f, nil
	}
	// Absent, or the same layouts written by another version (no layout
	// is older than v1, the first).
	if err := writeFormat(dir, cur); err != nil {
		if !ok {
			f = Format{Blobstore: 1, Metadata: 1} // what an absent FORMAT means
		}
		if f.Blobstore == cur.Blobstore && f.Metadata == cur.Metadata {
			return cur, fmt.Errorf("%w: %w", ErrNotRecorded, err)
		}
		return Format{}, err
	}
	return cur, nil
}

// writeFormat replaces dir's FORMAT atomically: a temp file, fsynced,
// renamed over it, and the directory fsynced.
func writeFormat(dir string, f Format) error {
	b, err := json.Marshal(f)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, FormatFile)
	tmp := path + ".tmp"
	err = func() error {
		fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		_, werr := fh.Write(append(b, '\n'))
		serr := fh.Sync()
		return errors.Join(werr, serr, fh.Close())
	}()
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("data dir %s: writing %s: %w (check that the data dir is writable)", dir, FormatFile, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
