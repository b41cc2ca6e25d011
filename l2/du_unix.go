//go:build unix

package l2

import (
	"io/fs"
	"syscall"
)

// allocated is the disk space a file takes, as du counts it: sparse
// (preallocated but unwritten) parts of Badger's files do not count.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}

// freeSpace is the space available to this user on dir's file system.
func freeSpace(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
