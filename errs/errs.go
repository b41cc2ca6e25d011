// Package errs holds the sentinel errors shared by every modelcache package.
//
// Errors returned by modelcache wrap one of these with %w and add the file,
// key or tensor concerned, so callers test them with errors.Is:
//
//	if errors.Is(err, errs.ErrInvalidModel) { ... }
package errs

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

var (
	// ErrNotFound: the key or tensor is not there. A cache tier returns it on a miss.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt: stored bytes failed a checksum or a structural check. The
	// bytes are never returned; the entry is treated as a miss and reloaded.
	ErrCorrupt = errors.New("corrupt entry")
	// ErrVersion: an entry was written in a format version this build does not read.
	ErrVersion = errors.New("unsupported entry format version")
	// ErrUnsupported: an entry uses a codec or feature this build does not know.
	ErrUnsupported = errors.New("unsupported")
	// ErrClosed: the cache or store was used after Close.
	ErrClosed = errors.New("closed")
	// ErrLocked: the cache directory is held by another process.
	ErrLocked = errors.New("directory in use by another process")
	// ErrInvalidModel: a model file is malformed or lies about its contents.
	ErrInvalidModel = errors.New("invalid model file")
	// ErrNoSpace: the file system is (nearly) full; the write was refused
	// before it could fail halfway.
	ErrNoSpace = errors.New("no space left for the cache")
	// ErrWrongKey: the cache directory was written with another encryption
	// key, or without one, than it is opened with.
	ErrWrongKey = errors.New("wrong or missing encryption key")
	// ErrChanged: a model file changed in place while it was being read;
	// what was read may mix two versions and was not used.
	ErrChanged = errors.New("model file changed while in use")
	// ErrTooLarge: a value exceeds a configured limit.
	ErrTooLarge = errors.New("too large")
	// ErrInvalidArgument: a caller's argument cannot name what it should
	// (an empty namespace, a key too long).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrForbidden: the daemon may not read what was asked for (a path
	// outside every root it serves).
	ErrForbidden = errors.New("forbidden")
)

// maxQuoted is how many bytes of a name or key a message shows.
const maxQuoted = 160

// Quote quotes a tensor name, key or other outside string for a message,
// cut to a readable length: a name can be megabytes long, and a message
// must stay one readable line.
func Quote(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + fmt.Sprintf("…(%d bytes)", len(s))
}

// sentinels names every sentinel, for errors that cross a process boundary
// (the HTTP API of warm serve) and come back as themselves.
var sentinels = []struct {
	name string
	err  error
}{
	{"ErrNotFound", ErrNotFound}, {"ErrCorrupt", ErrCorrupt}, {"ErrVersion", ErrVersion},
	{"ErrUnsupported", ErrUnsupported}, {"ErrClosed", ErrClosed}, {"ErrLocked", ErrLocked},
	{"ErrInvalidModel", ErrInvalidModel}, {"ErrNoSpace", ErrNoSpace}, {"ErrWrongKey", ErrWrongKey},
	{"ErrChanged", ErrChanged}, {"ErrTooLarge", ErrTooLarge}, {"ErrInvalidArgument", ErrInvalidArgument},
	{"ErrForbidden", ErrForbidden},
}

// Name is the name of the sentinel err wraps ("ErrNotFound"), or "".
func Name(err error) string {
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return ""
}

// ByName is the sentinel called name, or nil.
func ByName(name string) error {
	for _, s := range sentinels {
		if s.name == name {
			return s.err
		}
	}
	return nil
}
