package testnet

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// uploadDirNames are the names of directories holding in-progress uploads:
// meshreg's blobstore keeps them in <blob root>/uploads; CNCF Distribution
// in .../_uploads (so the helper can be checked against it too).
var uploadDirNames = map[string]bool{"uploads": true, "_uploads": true}

// LeftoverUploads walks dataDir for directories named "uploads" (or
// "_uploads") at any depth and returns what they hold (their direct
// entries, sorted). After a restart that followed a crash, a store that
// cleans up at start has left every such directory empty or removed it.
func LeftoverUploads(dataDir string) ([]string, error) {
	var found []string
	err := filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() || !uploadDirNames[d.Name()] || path == dataDir {
			return nil
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, e := range entries {
			found = append(found, filepath.Join(path, e.Name()))
		}
		return filepath.SkipDir
	})
	sort.Strings(found)
	return found, err
}

// FilesNamed walks dir and returns every file whose name contains sub: used
// to check that no file named after a blob that must not exist is on disk.
func FilesNamed(dir, sub string) ([]string, error) {
	var found []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(d.Name(), sub) {
			found = append(found, path)
		}
		return nil
	})
	return found, err
}
