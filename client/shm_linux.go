package client

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/shmwire"
)

// shm asks the daemon for a descriptor and maps it read-only.
func (c *Client) shm(ctx context.Context, target string) (*shmwire.Reply, []byte, error) {
	if c.socket == "" {
		return nil, nil, fmt.Errorf("client: shared memory needs the daemon's unix socket: %w", errs.ErrUnsupported)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNoServer, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	uc := conn.(*net.UnixConn)
	req := "GET " + target + " HTTP/1.1\r\nHost: modelcache\r\n"
	if c.token != "" {
		req += "Authorization: Bearer " + c.token + "\r\n"
	}
	if _, err := io.WriteString(uc, req+"\r\n"); err != nil {
		return nil, nil, c.readErr(ctx, "shared memory", err)
	}
	// One message: a length, the reply, and the descriptor with the first
	// bytes; what is left of a long reply follows.
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := uc.ReadMsgUnix(buf, oob)
	if err == nil && n == 0 {
		err = io.EOF // the daemon closed the connection without a word
	}
	if err != nil {
		return nil, nil, c.readErr(ctx, "shared memory", err)
	}
	fd := -1
	if oobn > 0 {
		if msgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil && len(msgs) == 1 {
			if fds, err := unix.ParseUnixRights(&msgs[0]); err == nil && len(fds) == 1 {
				fd = fds[0]
			}
		}
	}
	if fd >= 0 {
		defer unix.Close(fd)
	}
	if n < 4 {
		return nil, nil, errors.New("client: shared memory: short reply (the daemon is not warm serve, or too old)")
	}
	size := int(binary.LittleEndian.Uint32(buf))
	if size > 64<<20 {
		return nil, nil, errors.New("client: shared memory: reply too long")
	}
	body := make([]byte, size)
	got := copy(body, buf[4:n])
	if _, err := io.ReadFull(uc, body[got:]); err != nil {
		return nil, nil, c.readErr(ctx, "shared memory", err)
	}
	var reply shmwire.Reply
	if err := json.Unmarshal(body, &reply); err != nil {
		return nil, nil, fmt.Errorf("client: shared memory: %w", err)
	}
	if reply.Error != "" {
		if reply.HTTP {
			return nil, nil, errOverHTTP
		}
		return nil, nil, remote(reply.Error, reply.Sentinel)
	}
	if reply.Size == 0 {
		return &reply, []byte{}, nil
	}
	if fd < 0 {
		return nil, nil, errors.New("client: shared memory: no descriptor came")
	}
	// MAP_POPULATE: the pages are in memory already (the daemon's memfd);
	// mapping them now costs less than a fault per page later.
	data, err := unix.Mmap(fd, 0, int(reply.Size), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, nil, fmt.Errorf("client: shared memory: mmap: %w", err)
	}
	return &reply, data, nil
}

// unmap releases a mapping shm made.
func unmap(b []byte) error { return unix.Munmap(b) }
