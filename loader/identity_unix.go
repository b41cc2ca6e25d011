//go:build unix

package loader

import (
	"fmt"
	"os"
	"syscall"
)

// sysIdentity reads the device, inode and status-change time (ctime) of a
// file. ctime cannot be set by user tools (touch -r, rsync -t set mtime
// only), so an in-place rewrite that restores mtime still changes it.
func sysIdentity(fi os.FileInfo) (dev, ino uint64, ctime int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		//nolint:unconvert // widths differ across platforms
		return uint64(st.Dev), uint64(st.Ino), statCtime(st)
	}
	return 0, 0, 0
}

// openRegular opens the file at abs for reading, refusing anything but a
// regular file before it can block: opening a FIFO for reading waits for a
// writer, forever, so it is opened non-blocking and checked first.
func openRegular(abs string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(abs, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("loader: %s: %w", abs, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, invalid(abs, "not a regular file (%s)", fileKind(fi.Mode()))
	}
	return f, fi, nil
}
