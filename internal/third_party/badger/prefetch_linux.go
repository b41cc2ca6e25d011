package badger

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// modelcache patch: adviseWillNeed asks the kernel to start reading a range
// of a file into the page cache now, as one large read, instead of page
// fault by page fault when the mapping is touched.
func adviseWillNeed(lf *logFile, off, n int64) error {
	return unix.Fadvise(int(lf.Fd.Fd()), off, n, unix.FADV_WILLNEED)
}

// modelcache patch: releaseMapped drops the process's mapping of the whole
// pages inside b, a range of a file mapping (MAP_SHARED): the pages stay in
// the page cache (dirty ones are written back as usual) and a later access
// maps them again, with the same bytes. A process streaming gigabytes
// through its value log otherwise counts every page it touched in its
// resident set until the file is closed.
func releaseMapped(b []byte) {
	const page = 4096
	if len(b) < releaseMin {
		return
	}
	// The page bounds are computed as addresses, and the pointer handed to
	// madvise is derived from b's own with unsafe.Add, so it stays a
	// pointer into b that the garbage collector sees.
	p := unsafe.Pointer(&b[0])
	start := uintptr(p)
	lo := (start + page - 1) &^ (page - 1)
	hi := (start + uintptr(len(b))) &^ (page - 1)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, lo-start)), hi-lo), unix.MADV_DONTNEED)
}
