package main

import "syscall"

// childProcAttr has the kernel kill a daemon the test started if the test
// process dies first.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
