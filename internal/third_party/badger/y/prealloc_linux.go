package y

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// preallocate allocates the blocks of [off, off+n) of f. A file system
// that cannot preallocate leaves the file sparse, as before.
func preallocate(f *os.File, off, n int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), 0, off, n)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
			return nil
		}
		return err
	}
}
