package datadir

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeRaw(t *testing.T, dir, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, FormatFile), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readRaw(t *testing.T, dir string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, FormatFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

func TestCheckFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		setup   func(t *testing.T, dir string)
		want    Format // file content afterwards (zero: unchanged)
		wantErr []string
		tooNew  bool
	}{
		{name: "new data dir", setup: func(*testing.T, string) {},
			want: Format{1, 1, "v2.0.0"}},
		{name: "previous release (no FORMAT) is v1", setup: func(t *testing.T, dir string) {
			for _, sub := range []string{"blobs/sha256", "meta/raft", "p2p"} {
				if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}, want: Format{1, 1, "v2.0.0"}},
		{name: "same layout, older binary", setup: func(t *testing.T, dir string) {
			writeRaw(t, dir, `{"blobstore":1,"metadata":1,"written_by":"v1.9.0"}`)
		}, want: Format{1, 1, "v2.0.0"}},
		{name: "newer blob store", setup: func(t *testing.T, dir string) {
			writeRaw(t, dir, `{"blobstore":2,"metadata":1,"written_by":"v3.1.0"}`)
		}, tooNew: true, wantErr: []string{"written by meshreg v3.1.0", "blob store v2, metadata v1", "this meshreg v2.0.0 reads (blob store up to v1, metadata up to v1)", "run meshreg v3.1.0 or newer on it"}},
		{name: "newer metadata", setup: func(t *testing.T, dir string) {
			writeRaw(t, dir, `{"blobstore":1,"metadata":7,"written_by":"v9"}`)
		}, tooNew: true, wantErr: []string{"metadata v7", "run meshreg v9 or newer"}},
		{name: "not JSON", setup: func(t *testing.T, dir string) { writeRaw(t, dir, "garbage") },
			wantErr: []string{"is not a format record meshreg wrote", "remove it if the data dir was written by a release before FORMAT existed"}},
		{name: "version missing", setup: func(t *testing.T, dir string) { writeRaw(t, dir, `{"blobstore":1}`) },
			wantErr: []string{"a layout version is missing or below 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			tc.setup(t, dir)
			before, _ := os.ReadFile(filepath.Join(dir, FormatFile))
			got, err := CheckFormat(dir, "v2.0.0")
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("CheckFormat = %+v, nil; want an error", got)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if tc.tooNew != errors.Is(err, ErrTooNew) {
					t.Errorf("errors.Is(err, ErrTooNew) = %v, want %v", !tc.tooNew, tc.tooNew)
				}
				if after, _ := os.ReadFile(filepath.Join(dir, FormatFile)); string(after) != string(before) {
					t.Errorf("a refused data dir's FORMAT changed from %q to %q", before, after)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("CheckFormat = %+v, want %+v", got, tc.want)
			}
			m := readRaw(t, dir)
			if m["blobstore"] != float64(tc.want.Blobstore) || m["metadata"] != float64(tc.want.Metadata) || m["written_by"] != tc.want.WrittenBy {
				t.Errorf("FORMAT holds %v, want %+v under the keys blobstore, metadata, written_by", m, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, FormatFile+".tmp")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("temp file left behind: %v", err)
			}
		})
	}
}

// TestCheckFormatUnwritable: when FORMAT cannot be written but would
// change no layout version, the data dir is still usable (ErrNotRecorded).
func TestCheckFormatUnwritable(t *testing.T) {
	t.Parallel()
	for _, existing := range []string{"", `{"blobstore":1,"metadata":1,"written_by":"v1.0.0"}`} {
		dir := t.TempDir()
		if existing != "" {
			writeRaw(t, dir, existing)
		}
		// A directory where the temp file goes makes every write fail,
		// as a full disk would, even for root.
		if err := os.Mkdir(filepath.Join(dir, FormatFile+".tmp"), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := CheckFormat(dir, "v2.0.0")
		if !errors.Is(err, ErrNotRecorded) || f != Current("v2.0.0") {
			t.Errorf("FORMAT %q, unwritable: CheckFormat = %+v, %v; want the current format and ErrNotRecorded", existing, f, err)
		}
	}
}
