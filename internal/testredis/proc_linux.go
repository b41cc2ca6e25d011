package testredis

import "syscall"

// procAttr has the kernel kill the server if the test process dies first.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
