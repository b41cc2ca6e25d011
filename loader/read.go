package loader

import (
	"fmt"
	"io"

	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
)

// readBlock is the size of the reads ReadTensorInto issues in parallel: large
// enough that each is one sequential stretch of the disk, small enough that a
// tensor of a few blocks keeps several in flight.
const readBlock = 8 << 20

// readParallel bounds the reads one ReadTensorInto keeps in flight.
const readParallel = 4

// Direct reports whether the named tensor's stored bytes are its value, so
// that reading it is a copy of a byte range of the file (no inflating,
// byte-swapping or transposing).
func (f *File) direct(name string) bool {
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
// length. A tensor stored as is is read with positioned reads (pread, or
// the source's ReadAt) of
// readBlock bytes, several in flight, straight into dst: no page faults on a
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
	if !f.direct(name) {
		b, err := f.ReadTensor(name)
		if err != nil {
			return err
		}
		copy(dst, b)
		return f.check()
	}
	return f.readAt(name, dst, t.Offset)
}

// ReadTensorAt reads len(p) bytes of the named tensor's value (as
// ReadTensor returns it) starting at its byte off: the io.ReaderAt of a
// tensor that need not be in memory whole. A tensor stored as is is read
// straight from the file, with reads of readBlock bytes in parallel; a
// big-endian .npy array reads the elements asked for and swaps them; any
// other (an .npz member, whose CRC covers it whole, a Fortran-order array)
// is decoded whole at the first read and kept for the next ones until
// another such tensor is read or the file is closed. Reading past the
// tensor's end is io.ErrUnexpectedEOF.
func (f *File) ReadTensorAt(name string, p []byte, off uint64) error {
	i, err := f.index(name)
	if err != nil {
		return err
	}
	t, r := f.tensors[i], f.reads[i]
	if off > t.Length || uint64(len(p)) > t.Length-off {
		return fmt.Errorf("loader: %s: tensor %s: %d bytes at %d of %d: %w", f.id.Path, errs.Quote(name), len(p), off, t.Length, io.ErrUnexpectedEOF)
	}
	switch {
	case f.direct(name):
		return f.readAt(name, p, t.Offset+off)
	case !r.member && !r.fortran && r.swap > 1 && r.stored == t.Length:
		// Whole elements around [off, off+len(p)), swapped.
		w := uint64(r.swap)
		start, end := off/w*w, (off+uint64(len(p))+w-1)/w*w
		buf := make([]byte, end-start)
		if err := f.readAt(name, buf, t.Offset+start); err != nil {
			return err
		}
		swapBytes(buf, r.swap)
		copy(p, buf[off-start:])
		return nil
	}
	f.dmu.Lock()
	defer f.dmu.Unlock()
	if f.decoded.b == nil || f.decoded.name != name {
		b, err := f.ReadTensor(name)
		if err != nil {
			return err
		}
		f.decoded.name, f.decoded.b = name, b
	}
	copy(p, f.decoded.b[off:])
	return f.check()
}

// readAt fills p from the file at off, in readBlock reads in parallel, and
// checks that the file did not change meanwhile.
func (f *File) readAt(name string, p []byte, at uint64) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return fmt.Errorf("loader: %s: %w", f.id.Path, errs.ErrClosed)
	}
	var err error
	base := int64(at)
	if len(p) <= readBlock {
		err = readFull(f.src, p, base)
	} else {
		var g errgroup.Group
		g.SetLimit(readParallel)
		for start := 0; start < len(p); start += readBlock {
			b := p[start:min(start+readBlock, len(p))]
			g.Go(func() error { return readFull(f.src, b, base+int64(start)) })
		}
		err = g.Wait()
	}
	if err != nil {
		return f.readFailed(name, err)
	}
	return f.checkUnchanged()
}

// readFailed is the error of a read of the named tensor that failed.
func (f *File) readFailed(name string, err error) error {
	if f.local != nil {
		return fmt.Errorf("loader: %s: tensor %s: %w (was the file truncated while in use?)", f.id.Path, errs.Quote(name), err)
	}
	return fmt.Errorf("loader: %s: tensor %s: %w", f.id.Path, errs.Quote(name), err)
}

// Check reports errs.ErrChanged if the local file opened was changed in
// place (written, truncated) since Open: its bytes may no longer be those of
// the version whose identity it has. A file replaced by another (renamed
// over, deleted) is not changed: the version opened stays readable. A Blob
// that is no local file reports a change itself, on read.
func (f *File) check() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return fmt.Errorf("loader: %s: %w", f.id.Path, errs.ErrClosed)
	}
	return f.checkUnchanged()
}

func (f *File) checkUnchanged() error {
	if f.local == nil {
		return nil
	}
	return f.local.unchanged()
}
