//go:build !linux

package testredis

import "syscall"

// procAttr: only Linux has a parent-death signal; a test process that dies
// first leaves its servers running until the cleanup of a later run.
func procAttr() *syscall.SysProcAttr { return nil }
