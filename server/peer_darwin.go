package server

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerUID is the uid of the process at the other end of a unix socket
// (LOCAL_PEERCRED, macOS's SO_PEERCRED).
func peerUID(c *net.UnixConn) (uint32, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Xucred
	_ = raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED) })
	if cred == nil {
		return 0, false
	}
	return cred.Uid, true
}
