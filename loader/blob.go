package loader

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/modelcache/modelcache/errs"
)

// Blob is the bytes of one version of one file, read by range: a local file
// (OpenLocal), a buffer, an object in a store. OpenBlob parses any Blob as a
// model file; ReadShardIndexBlob and DigestBlob read one too.
//
// ReadAt is io.ReaderAt's, safe for concurrent use. It reads the version
// Identity names and nothing else: a source that finds its file replaced
// fails the read (wrapping errs.ErrChanged) rather than mix two versions. A
// Blob that is also an io.Closer is closed by whoever took it (a File opened
// from it, at Close).
type Blob interface {
	io.ReaderAt
	// Identity is the version ReadAt reads: its Path names the blob in
	// messages, its Size is the number of bytes.
	Identity() Identity
}

// localBlob is a local regular file, open at the version its identity
// names. OpenBlob maps it and reads it with pread on its descriptor, as
// Open does.
type localBlob struct {
	fd *os.File
	id Identity
}

// OpenLocal opens the regular file at path as a Blob of the version opened:
// an *os.File's positioned reads, closed by Close. Anything but a regular
// file (a FIFO, a device, a directory) is refused before it can block.
func OpenLocal(path string) (Blob, error) {
	b, err := openLocal(path)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func openLocal(path string) (*localBlob, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("loader: %s: %w", path, err)
	}
	f, fi, err := openRegular(abs)
	if err != nil {
		return nil, err
	}
	return &localBlob{fd: f, id: identityOf(abs, fi)}, nil
}

func (b *localBlob) ReadAt(p []byte, off int64) (int, error) { return b.fd.ReadAt(p, off) }
func (b *localBlob) Identity() Identity                      { return b.id }
func (b *localBlob) Close() error                            { return b.fd.Close() }

// unchanged reports errs.ErrChanged if the file was changed in place
// (written, truncated) since it was opened: its bytes may no longer be those
// of the version opened. A file replaced by another (renamed over, deleted)
// is not changed: the version opened stays readable.
func (b *localBlob) unchanged() error {
	fi, err := b.fd.Stat()
	if err != nil {
		return fmt.Errorf("loader: %s: %w", b.id.Path, err)
	}
	// Not ctime: unlinking or renaming over the file, which leaves the
	// version opened intact, changes it too.
	if now := identityOf(b.id.Path, fi); now.Size != b.id.Size || now.ModTime != b.id.ModTime {
		return fmt.Errorf("loader: %s: %w (size %d → %d)", b.id.Path, errs.ErrChanged, b.id.Size, now.Size)
	}
	return nil
}

// closeBlob closes b if it is an io.Closer.
func closeBlob(b Blob) error {
	if c, ok := b.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// readFull fills p from r at off; fewer bytes than asked is
// io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF || err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// readError is a failure to read a file's bytes while parsing it, which is
// not a defect of the file: it is reported as what it is, not as
// errs.ErrInvalidModel.
type readError struct{ err error }

func (e *readError) Error() string { return "reading: " + e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// fileBytes are the bytes of a file as its parser reads them: slices of the
// mapping of a local file, reads of any other Blob.
type fileBytes struct {
	size   uint64
	mapped []byte // the whole file, when mapped
	ra     io.ReaderAt
	head   []byte // not mapped: the first headRead bytes, once read
}

// headRead is how much of a file that is not mapped is read at once for
// its header: every format's usual header fits, in one read of the source.
const headRead = 64 << 10

// read returns the n bytes at off, which the caller has checked lie within
// the file: shared with the mapping or the head, or a new buffer read.
func (b *fileBytes) read(off, n uint64) ([]byte, error) {
	switch {
	case n == 0:
		return []byte{}, nil
	case b.mapped != nil:
		return b.mapped[off : off+n : off+n], nil
	case b.head == nil && off < headRead:
		head := make([]byte, min(b.size, headRead))
		if err := readFull(b.ra, head, 0); err != nil {
			return nil, &readError{err}
		}
		b.head = head
	}
	if off+n <= uint64(len(b.head)) {
		return b.head[off : off+n : off+n], nil
	}
	p := make([]byte, n)
	if err := readFull(b.ra, p, int64(off)); err != nil {
		return nil, &readError{err}
	}
	return p, nil
}

// ReadAt copies from the mapping or reads the Blob, for archive/zip and the
// readers of .npz members.
func (b *fileBytes) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		// An offset the archive computed, not a failure of the source.
		return 0, fmt.Errorf("offset %d", off)
	}
	if b.mapped != nil {
		if off >= int64(len(b.mapped)) {
			return 0, io.EOF
		}
		n := copy(p, b.mapped[off:])
		if n < len(p) {
			return n, io.EOF
		}
		return n, nil
	}
	n, err := b.ra.ReadAt(p, off)
	if err != nil && err != io.EOF {
		err = &readError{err}
	}
	return n, err
}
