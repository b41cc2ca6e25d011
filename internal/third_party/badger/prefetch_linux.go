package badger

import "golang.org/x/sys/unix"

// modelcache patch: adviseWillNeed asks the kernel to start reading a range
// of a file into the page cache now, as one large read, instead of page
// fault by page fault when the mapping is touched.
func adviseWillNeed(lf *logFile, off, n int64) error {
	return unix.Fadvise(int(lf.Fd.Fd()), off, n, unix.FADV_WILLNEED)
}
