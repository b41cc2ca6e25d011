//go:build unix

package testfs

import (
	"testing"

	"golang.org/x/sys/unix"
)

// Free is the space left on dir's file system for an unprivileged writer.
func Free(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize) //nolint:unconvert // Bsize is uint32 on darwin
}
