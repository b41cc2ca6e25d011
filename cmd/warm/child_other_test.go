//go:build !linux

package main

import "syscall"

// childProcAttr: only Linux has a parent-death signal; the tests' cleanups
// stop their daemons.
func childProcAttr() *syscall.SysProcAttr { return nil }
