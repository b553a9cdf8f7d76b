package blobstore

import (
	"io/fs"
	"syscall"
)

// fileStamp identifies one version of a file: any write to it, or a
// utimes, changes its ctime, which user space cannot set.
type fileStamp struct {
	ino          uint64
	size         int64
	mtime, ctime int64 // nanoseconds
}

func stampOf(fi fs.FileInfo) fileStamp {
	st := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
		st.ctime = sys.Ctim.Nano()
	}
	return st
}
