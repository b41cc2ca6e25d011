//go:build !unix

package loader

import (
	"fmt"
	"os"
)

// Without inodes, identity rests on path, size and modification time.
func sysIdentity(os.FileInfo) (dev, ino uint64, ctime int64) { return 0, 0, 0 }

// openRegular opens the file at abs for reading, refusing anything but a
// regular file.
func openRegular(abs string) (*os.File, os.FileInfo, error) {
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, invalid(abs, "not a regular file (%s)", fileKind(fi.Mode()))
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, nil, fmt.Errorf("loader: %w", err)
	}
	if fi, err = f.Stat(); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("loader: %s: %w", abs, err)
	}
	return f, fi, nil
}
