//go:build unix

package testredis

import (
	"os"
	"syscall"
)

// kill sends SIGKILL to p by its PID.
func kill(p *os.Process) { _ = syscall.Kill(p.Pid, syscall.SIGKILL) }

// pause stops (SIGSTOP) or resumes (SIGCONT) the server.
func (s *Server) pause(stop bool) {
	sig := syscall.SIGCONT
	if stop {
		sig = syscall.SIGSTOP
	}
	_ = syscall.Kill(s.cmd.Process.Pid, sig)
}
