//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package datadir

import (
	"errors"
	"os"
)

// errLocked is never returned here: on systems without flock(2) the lock
// file only records the holder, and the metadata store's own directory
// lock (badger) is the one that keeps a second process out.
var errLocked = errors.New("locked")

func flock(*os.File) error   { return nil }
func funlock(*os.File) error { return nil }
