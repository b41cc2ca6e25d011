//go:build unix

package main

import (
	"os"
	"runtime"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// measuresRSS: a child's peak RSS can be read (ru_maxrss).
const measuresRSS = true

// mkfifo makes a FIFO at p.
func mkfifo(t testing.TB, p string) {
	t.Helper()
	require.NoError(t, syscall.Mkfifo(p, 0o644))
}

// maxRSS is a finished child's peak resident set (ru_maxrss), in bytes.
func maxRSS(ps *os.ProcessState) int64 {
	ru := ps.SysUsage().(*syscall.Rusage)
	if runtime.GOOS == "darwin" {
		return int64(ru.Maxrss) // bytes
	}
	return int64(ru.Maxrss) << 10 // KiB
}

// dirBlocks is the disk space the directory dir itself takes, in bytes.
func dirBlocks(t testing.TB, dir string) int64 {
	t.Helper()
	var st syscall.Stat_t
	require.NoError(t, syscall.Stat(dir, &st))
	return int64(st.Blocks) * 512
}
