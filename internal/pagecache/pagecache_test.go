//go:build linux

package pagecache

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Evicting a file that was just written and read drops it from the page
// cache, as mincore sees it; reading it brings it back.
func TestEvictAndResident(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	require.NoError(t, os.WriteFile(p, make([]byte, 8<<20), 0o644))
	_, err := os.ReadFile(p)
	require.NoError(t, err)
	before, err := ResidentFraction(dir)
	require.NoError(t, err)
	require.Greater(t, before, 0.9)

	require.NoError(t, EvictAll(dir))
	after, err := ResidentFraction(dir)
	require.NoError(t, err)
	if after > 0.05 {
		t.Skipf("this file system keeps pages after POSIX_FADV_DONTNEED (%.0f%% resident); cold reads cannot be measured here", after*100)
	}
	_, err = os.ReadFile(p)
	require.NoError(t, err)
	again, err := ResidentFraction(dir)
	require.NoError(t, err)
	require.Greater(t, again, 0.9)
}
