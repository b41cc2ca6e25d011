package loader

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/modelcache/modelcache/errs"
)

// Identity is the version of a file on disk. Two reads of a file with equal
// identities are taken to see the same bytes.
type Identity struct {
	Path    string // absolute, cleaned
	Size    int64
	ModTime int64 // nanoseconds since the Unix epoch
	Dev     uint64
	Inode   uint64
	// Ctime is the inode's status-change time (nanoseconds): user tools can
	// set mtime back after rewriting a file in place, never ctime.
	Ctime int64
	IsDir bool // a directory (a sharded checkpoint's); not part of String
}

// String is a stable, unique spelling of the identity, usable as a key:
// the path, NUL, then size:mtime:ctime:dev:inode.
func (id Identity) String() string {
	return id.Path + "\x00" + id.Version()
}

// Version is the identity without its path: size:mtime:ctime:dev:inode.
func (id Identity) Version() string {
	return fmt.Sprintf("%d:%d:%d:%d:%d", id.Size, id.ModTime, id.Ctime, id.Dev, id.Inode)
}

// ParseIdentity reads back what Identity.String wrote (IsDir is not part of
// it).
func ParseIdentity(s string) (Identity, error) {
	path, v, ok := strings.Cut(s, "\x00")
	parts := strings.Split(v, ":")
	if !ok || len(parts) != 5 {
		return Identity{}, fmt.Errorf("loader: %w: identity %.80q", errs.ErrCorrupt, s)
	}
	var n [5]uint64
	for i, p := range parts {
		x, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return Identity{}, fmt.Errorf("loader: %w: identity %.80q", errs.ErrCorrupt, s)
		}
		n[i] = x
	}
	return Identity{Path: path, Size: int64(n[0]), ModTime: int64(n[1]), Ctime: int64(n[2]), Dev: n[3], Inode: n[4]}, nil
}

// Stat returns the identity of the file at path as it is now.
func Stat(path string) (Identity, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Identity{}, fmt.Errorf("loader: %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return Identity{}, fmt.Errorf("loader: %w", err)
	}
	return identityOf(abs, fi), nil
}

func identityOf(abs string, fi os.FileInfo) Identity {
	id := Identity{Path: abs, Size: fi.Size(), ModTime: fi.ModTime().UnixNano(), IsDir: fi.IsDir()}
	id.Dev, id.Inode, id.Ctime = sysIdentity(fi)
	return id
}

// fileKind names what a non-regular file is, for messages.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "mode " + m.Type().String()
}
