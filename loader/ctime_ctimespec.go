//go:build darwin || freebsd || netbsd

package loader

import "syscall"

// statCtime is st's status-change time in nanoseconds; these systems call
// the field Ctimespec.
func statCtime(st *syscall.Stat_t) int64 {
	//nolint:unconvert // widths differ across platforms
	return int64(st.Ctimespec.Sec)*1e9 + int64(st.Ctimespec.Nsec)
}
