//go:build !unix

package testredis

import "os"

// kill ends p (TerminateProcess on Windows).
func kill(p *os.Process) { _ = p.Kill() }

// pause needs SIGSTOP, which this system does not have.
func (s *Server) pause(bool) {
	s.t.Helper()
	s.t.Skip("testredis: pausing redis-server needs SIGSTOP (Unix)")
}
