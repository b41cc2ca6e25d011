//go:build !linux

package badger

// modelcache patch: without posix_fadvise, prefetching does nothing.
func adviseWillNeed(*logFile, int64, int64) error { return nil }

// modelcache patch: without madvise, mapped pages stay resident until the
// file is closed.
func releaseMapped([]byte) {}
