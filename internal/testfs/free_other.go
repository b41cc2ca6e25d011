//go:build !unix

package testfs

import "testing"

// Free needs statfs; without it the test is skipped.
func Free(t testing.TB, dir string) int64 {
	t.Helper()
	t.Skip("testfs: free space is measured with statfs (Unix)")
	return 0
}
