//go:build !unix

package main

import (
	"os"
	"testing"
)

// measuresRSS: no ru_maxrss here.
const measuresRSS = false

// mkfifo: no FIFOs here; the test is skipped.
func mkfifo(t testing.TB, _ string) {
	t.Helper()
	t.Skip("FIFOs are Unix's")
}

// maxRSS is unknown here (measuresRSS).
func maxRSS(*os.ProcessState) int64 { return 0 }

// dirBlocks: no block counts here; the test is skipped.
func dirBlocks(t testing.TB, _ string) int64 {
	t.Helper()
	t.Skip("a directory's blocks are counted on Unix")
	return 0
}
