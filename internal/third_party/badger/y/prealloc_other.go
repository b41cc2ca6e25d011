//go:build !linux

package y

import "os"

// preallocate is a no-op where fallocate is missing: files stay sparse.
func preallocate(*os.File, int64, int64) error { return nil }
