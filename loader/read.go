package loader

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
)

// ReadBlock is the size of the reads ReadTensorInto issues in parallel: large
// enough that each is one sequential stretch of the disk, small enough that a
// tensor of a few blocks keeps several in flight.
const ReadBlock = 8 << 20

// readParallel bounds the reads one ReadTensorInto keeps in flight.
const readParallel = 4

// Direct reports whether the named tensor's stored bytes are its value, so
// that reading it is a copy of a byte range of the file (no inflating,
// byte-swapping or transposing).
func (f *File) Direct(name string) bool {
	i, ok := f.byName[name]
	if !ok {
		return false
	}
	r := f.reads[i]
	return !r.member && !r.deflate && r.swap <= 1 && !r.fortran && r.stored == f.tensors[i].Length
}

// index is the position of the named tensor, or errs.ErrNotFound.
func (f *File) index(name string) (int, error) {
	i, ok := f.byName[name]
	if !ok {
		return 0, fmt.Errorf("loader: %s: tensor %s: %w", f.id.Path, errs.Quote(name), errs.ErrNotFound)
	}
	return i, nil
}

// ReadTensorInto reads the named tensor into dst, which must be exactly its
// length. A tensor stored as is is read with positioned reads (pread) of
// ReadBlock bytes, several in flight, straight into dst: no page faults on a
// mapping, no second copy. Others are decoded as ReadTensor does and copied.
// The bytes are those of the version opened; a file changed in place while
// being read is errs.ErrChanged.
func (f *File) ReadTensorInto(name string, dst []byte) error {
	i, err := f.index(name)
	if err != nil {
		return err
	}
	t := f.tensors[i]
	if uint64(len(dst)) != t.Length {
		return fmt.Errorf("loader: %s: tensor %s: buffer of %d bytes for %d", f.id.Path, errs.Quote(name), len(dst), t.Length)
	}
	if !f.Direct(name) {
		b, err := f.ReadTensor(name)
		if err != nil {
			return err
		}
		copy(dst, b)
		return f.Check()
	}
	return f.ReadTensorAt(name, dst, 0)
}

// ReadTensorAt reads len(p) bytes of the named tensor, which must be
// Direct, starting at its byte off, with reads of ReadBlock bytes in
// parallel. It is the io.ReaderAt of a tensor that need not be in memory
// whole. Reading past the tensor's end is io.ErrUnexpectedEOF.
func (f *File) ReadTensorAt(name string, p []byte, off uint64) error {
	i, err := f.index(name)
	if err != nil {
		return err
	}
	t := f.tensors[i]
	if !f.Direct(name) {
		return fmt.Errorf("loader: %s: tensor %s is stored encoded (%s); read it whole: %w", f.id.Path, errs.Quote(name), f.format, errs.ErrUnsupported)
	}
	if off > t.Length || uint64(len(p)) > t.Length-off {
		return fmt.Errorf("loader: %s: tensor %s: %d bytes at %d of %d: %w", f.id.Path, errs.Quote(name), len(p), off, t.Length, io.ErrUnexpectedEOF)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return fmt.Errorf("loader: %s: %w", f.id.Path, errs.ErrClosed)
	}
	base := int64(t.Offset + off)
	if len(p) <= ReadBlock {
		err = preadFull(f.fd, p, base)
	} else {
		var g errgroup.Group
		g.SetLimit(readParallel)
		for start := 0; start < len(p); start += ReadBlock {
			b := p[start:min(start+ReadBlock, len(p))]
			g.Go(func() error { return preadFull(f.fd, b, base+int64(start)) })
		}
		err = g.Wait()
	}
	if err != nil {
		return fmt.Errorf("loader: %s: tensor %s: %w (was the file truncated while in use?)", f.id.Path, errs.Quote(name), err)
	}
	return f.checkUnchanged()
}

// preadFull fills p from fd at off; a short file is io.ErrUnexpectedEOF.
func preadFull(fd *os.File, p []byte, off int64) error {
	n, err := fd.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Check reports errs.ErrChanged if the file opened was changed in place
// (written, truncated) since Open: its bytes may no longer be those of the
// version whose identity it has. A file replaced by another (renamed over,
// deleted) is not changed: the version opened stays readable.
func (f *File) Check() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return fmt.Errorf("loader: %s: %w", f.id.Path, errs.ErrClosed)
	}
	return f.checkUnchanged()
}

func (f *File) checkUnchanged() error {
	fi, err := f.fd.Stat()
	if err != nil {
		return fmt.Errorf("loader: %s: %w", f.id.Path, err)
	}
	// Not ctime: unlinking or renaming over the file, which leaves the
	// version opened intact, changes it too.
	if now := identityOf(f.id.Path, fi); now.Size != f.id.Size || now.ModTime != f.id.ModTime {
		return fmt.Errorf("loader: %s: %w (size %d → %d)", f.id.Path, errs.ErrChanged, f.id.Size, now.Size)
	}
	return nil
}
