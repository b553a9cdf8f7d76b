//go:build !linux

package blobstore

import "io/fs"

// fileStamp identifies one version of a file as far as portable stat
// fields allow: size and mtime.
type fileStamp struct {
	size  int64
	mtime int64 // nanoseconds
}

func stampOf(fi fs.FileInfo) fileStamp {
	return fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}
