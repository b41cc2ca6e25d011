//go:build unix

package l2

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/modelcache/modelcache/errs"
)

// lockDir takes an exclusive, non-blocking flock on dir's lock file. The lock
// is released when the returned file is closed or the process dies.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("l2: %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("l2: %s: %w", dir, errs.ErrLocked)
		}
		return nil, fmt.Errorf("l2: %s: lock: %w", dir, err)
	}
	return f, nil
}
