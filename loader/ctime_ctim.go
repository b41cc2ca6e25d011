//go:build unix && !darwin && !freebsd && !netbsd

package loader

import "syscall"

// statCtime is st's status-change time in nanoseconds; Linux and most
// systems call the field Ctim.
func statCtime(st *syscall.Stat_t) int64 {
	//nolint:unconvert // widths differ across platforms
	return int64(st.Ctim.Sec)*1e9 + int64(st.Ctim.Nsec)
}
