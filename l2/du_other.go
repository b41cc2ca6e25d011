//go:build !unix && !windows

package l2

import (
	"errors"
	"io/fs"
)

func allocated(fi fs.FileInfo) int64 { return fi.Size() }

func freeSpace(string) (int64, error) { return 0, errors.ErrUnsupported }
