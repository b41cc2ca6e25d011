//go:build unix

package resolve

import (
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// mkfifo makes a FIFO at p.
func mkfifo(t testing.TB, p string) {
	t.Helper()
	require.NoError(t, syscall.Mkfifo(p, 0o644))
}
