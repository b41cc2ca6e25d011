package loader

import (
	"bytes"
	"compress/flate"
	"fmt"
	"hash"
	"hash/crc32"
	"io"

	"github.com/modelcache/modelcache/errs"
)

// TensorReader returns a reader of the named tensor's value, little-endian
// and row-major, read from the file as it is consumed: a tensor of any size
// passes through a small buffer. A deflated .npz member is inflated as it is
// read, once, and its CRC-32 checked at the end: the last Read reports a
// mismatch, a stream that ends early or one that goes on. Big-endian
// elements are swapped on the way. Only a Fortran-order .npy array, whose
// first output element needs its whole input, is read whole first.
func (f *File) TensorReader(name string) (io.ReadCloser, error) {
	i, err := f.index(name)
	if err != nil {
		return nil, err
	}
	t, r := f.tensors[i], f.reads[i]
	if r.fortran {
		b, err := f.ReadTensor(name)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(bytes.NewReader(b)), nil
	}
	fail := func(err error) error {
		return fmt.Errorf("loader: %s: tensor %s: %w", f.id.Path, errs.Quote(name), err)
	}
	var src io.Reader = io.NewSectionReader(fileAt{f}, int64(t.Offset), int64(r.stored))
	switch {
	case r.deflate:
		src = &memberReader{f: f, name: name, zr: flate.NewReader(src), skip: r.skip, n: t.Length, want: r.crc, h: crc32.NewIEEE(), inflated: true}
	case r.member:
		src = &memberReader{f: f, name: name, zr: io.NopCloser(src), skip: r.skip, n: t.Length, want: r.crc, h: crc32.NewIEEE()}
	default:
		src = &checkedReader{r: src, f: f, n: t.Length, fail: fail}
	}
	if r.swap > 1 {
		src = &swapReader{r: src, w: r.swap}
	}
	return io.NopCloser(src), nil
}

// fileAt reads the open file at an offset, unless it is closed.
type fileAt struct{ f *File }

func (a fileAt) ReadAt(p []byte, off int64) (int, error) {
	a.f.mu.RLock()
	defer a.f.mu.RUnlock()
	if a.f.closed {
		return 0, fmt.Errorf("loader: %s: %w", a.f.id.Path, errs.ErrClosed)
	}
	return a.f.src.ReadAt(p, off)
}

// checkedReader passes n bytes through and, at their end, checks that the
// file was not changed in place while read.
type checkedReader struct {
	r    io.Reader
	f    *File
	n    uint64
	read uint64
	fail func(error) error
}

func (c *checkedReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.read += uint64(k)
	if err == io.EOF {
		if c.read < c.n {
			return k, c.fail(fmt.Errorf("%w after %d of %d bytes (was the file truncated while in use?)", io.ErrUnexpectedEOF, c.read, c.n))
		}
		if cerr := c.f.check(); cerr != nil {
			return k, cerr
		}
	}
	return k, err
}

// memberReader yields the n bytes of a .npz member after its first skip
// (the .npy header), inflating as it goes if the member is deflated, and
// checks the member's CRC-32 and length at the end.
type memberReader struct {
	f        *File
	name     string
	zr       io.ReadCloser
	skip, n  uint64
	read     uint64
	want     uint32
	h        hash.Hash32
	inflated bool
	started  bool
	done     bool
}

func (m *memberReader) fail(format string, args ...any) error {
	return invalid(m.f.id.Path, "tensor %s: %w", errs.Quote(m.name), fmt.Errorf(format, args...))
}

func (m *memberReader) Read(p []byte) (int, error) {
	if !m.started {
		m.started = true
		if _, err := io.CopyN(m.h, m.zr, int64(m.skip)); err != nil {
			return 0, m.fail("reading the member's header: %w", err)
		}
	}
	if m.done {
		return 0, io.EOF
	}
	if left := m.n - m.read; uint64(len(p)) > left {
		p = p[:left]
	}
	if len(p) == 0 {
		return 0, m.finish()
	}
	k, err := m.zr.Read(p)
	m.h.Write(p[:k])
	m.read += uint64(k)
	if err == io.EOF && m.read < m.n {
		return k, m.fail("the member ends after %d of %d bytes", m.skip+m.read, m.skip+m.n)
	}
	if err != nil && err != io.EOF {
		return k, m.fail("inflating: %w", err)
	}
	return k, nil
}

// finish checks, once every byte was read, that the member ends there and
// that its CRC-32 matches.
func (m *memberReader) finish() error {
	m.done = true
	if k, err := io.ReadFull(m.zr, make([]byte, 1)); k != 0 || (err != io.EOF && err != io.ErrUnexpectedEOF) {
		if k != 0 {
			return m.fail("member holds more than its declared %d bytes", m.skip+m.n)
		}
		return m.fail("DEFLATE stream does not end after %d bytes: %w", m.skip+m.n, err)
	}
	if got := m.h.Sum32(); got != m.want {
		return m.fail("CRC-32 %08x, the archive says %08x", got, m.want)
	}
	if err := m.f.check(); err != nil {
		return err
	}
	return io.EOF
}

// swapReader reverses the bytes of each w-byte element, holding back a
// partial element until the rest of it arrives.
type swapReader struct {
	r     io.Reader
	w     int
	part  []byte // bytes of an element not yet whole, as read
	ready []byte // swapped bytes a buffer smaller than an element left
	err   error
}

func (s *swapReader) Read(p []byte) (int, error) {
	if len(s.ready) > 0 {
		n := copy(p, s.ready)
		s.ready = s.ready[n:]
		return n, nil
	}
	if len(p) < s.w {
		// A buffer smaller than an element (a reader probing for the
		// end with one byte): swap a whole one and hand it out in pieces.
		elem := make([]byte, s.w)
		n, err := s.Read(elem)
		k := copy(p, elem[:n])
		s.ready = elem[k:n]
		return k, err
	}
	p = p[:len(p)/s.w*s.w]
	n := copy(p, s.part)
	s.part = s.part[:0]
	for n < s.w && s.err == nil {
		k, err := s.r.Read(p[n:])
		n += k
		s.err = err
	}
	whole := n / s.w * s.w
	s.part = append(s.part, p[whole:n]...)
	swapBytes(p[:whole], s.w)
	if whole == 0 {
		if s.err == io.EOF && len(s.part) > 0 {
			return 0, io.ErrUnexpectedEOF
		}
		return 0, s.err
	}
	return whole, nil
}
