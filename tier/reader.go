package tier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/l2"
)

// StreamAbove is the tensor size above which Warm streams a tensor into L2
// chunk by chunk instead of reading it whole first, and the size above
// which a reader that does not want a tensor in memory whole should use
// OpenTensor (warm get does).
const StreamAbove = 64 << 20

// streamAbove is StreamAbove; tests lower it.
var streamAbove uint64 = StreamAbove

// TensorReader reads one tensor without holding it in memory whole: an
// io.ReaderAt and io.WriterTo over its bytes (little-endian, row-major), for
// callers who do not want a multi-gigabyte tensor in one slice. From L2 it
// decodes a chunk at a time; from the file it reads as it goes, and WriteTo
// writes what it reads to L2 on the way. Close releases it.
type TensorReader struct {
	Name     string
	DType    string
	Shape    []uint64 // shared: do not modify
	ServedBy Tier     // where the bytes come from: L1, L2, L3, Shared (another caller's L3 read) or Source

	c    *Cache
	key  string
	size int64

	data    []byte          // L1: the tensor
	entry   *l2.EntryReader // L2
	file    ModelFile       // Source
	release func()          // of file
	mu      sync.Mutex      // guards chunk, buf and closed
	chunk   int             // index of the chunk in buf, or -1
	buf     []byte          // one decoded chunk
	closed  bool
}

// Size is the tensor's length in bytes.
func (r *TensorReader) Size() int64 { return r.size }

// OpenTensor opens the named tensor of the model at path for reading
// piecewise; see TensorReader.
func (c *Cache) OpenTensor(ctx context.Context, path, name string) (*TensorReader, error) {
	m, err := c.Model(ctx, path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return m.OpenTensor(ctx, name)
}

// OpenTensor opens the named tensor for reading piecewise from the fastest
// tier that has it, of the version the handle holds; see TensorReader. It
// counts as one request in Stats.
func (m *Model) OpenTensor(ctx context.Context, name string) (r *TensorReader, err error) {
	c := m.c
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.exit()
	req := c.begin(&c.tensors)
	defer func() {
		by := Source
		if r != nil {
			by = r.ServedBy
		}
		req.end(by, err)
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.usable(); err != nil {
		return nil, err
	}
	ti, pf, err := m.lookup(name)
	if err != nil {
		return nil, err
	}
	if v, ok := c.l1.Get(ti.key); ok {
		// The hot path, without a walk: an L1 hit.
		return &TensorReader{Name: name, DType: ti.DType, Shape: ti.Shape, ServedBy: L1, c: c, key: ti.key, size: int64(ti.Bytes), chunk: -1, data: v.data}, nil
	}
	wreq := req // a copy: req stays on the stack for the L1 hit above
	f, err := c.walk(ctx, &wreq, &read{key: ti.key, where: pf.f.Path(), name: name, file: pf.f, sink: toStream, wait: true, keep: true})
	req = wreq
	if err != nil {
		return nil, err
	}
	r = &TensorReader{Name: name, DType: ti.DType, Shape: ti.Shape, ServedBy: f.by, c: c, key: ti.key, size: int64(ti.Bytes), chunk: -1}
	switch {
	case f.v != nil:
		r.data = f.v.data
	case f.entry != nil:
		r.entry = f.entry
	default:
		// Held open at its version for the reader's lifetime.
		r.file, r.release = f.file, f.release
	}
	return r, nil
}

// ReadAt reads len(p) bytes at off. From the file, a tensor not stored as
// is (a deflated .npz member, big-endian or Fortran-order .npy) is read
// whole at the first ReadAt; WriteTo streams those too.
func (r *TensorReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("tier: tensor %s: negative offset %d", errs.Quote(r.Name), off)
	}
	if off >= r.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	var err error
	if int64(n) > r.size-off {
		n, err = int(r.size-off), io.EOF
	}
	p = p[:n]
	switch {
	case r.data != nil || r.size == 0:
		copy(p, r.data[off:])
	case r.entry != nil:
		if rerr := r.readL2(p, off); rerr != nil {
			return 0, rerr
		}
	default:
		if rerr := r.readFile(p, off); rerr != nil {
			return 0, rerr
		}
	}
	return n, err
}

// readL2 copies from the chunks holding [off, off+len(p)), decoding each
// once while reads stay within it.
func (r *TensorReader) readL2(p []byte, off int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.entry.Header()
	cs := int64(h.ChunkSize)
	for len(p) > 0 {
		i := int(off / cs)
		b, err := r.chunkLocked(i)
		if err != nil {
			return err
		}
		k := copy(p, b[off-int64(i)*cs:])
		p, off = p[k:], off+int64(k)
	}
	return nil
}

// chunkLocked returns L2 chunk i decoded, from buf if it holds it; mu is
// held.
func (r *TensorReader) chunkLocked(i int) ([]byte, error) {
	if r.chunk == i {
		return r.buf, nil
	}
	r.buf = grow(r.buf, r.entry.Header().ChunkLen(i))
	if err := r.entry.ReadChunk(i, r.buf); err != nil {
		r.chunk = -1
		return nil, fmt.Errorf("tier: tensor %s: %w", errs.Quote(r.Name), err)
	}
	r.chunk = i
	return r.buf, nil
}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// readFile reads from the model file: directly where the tensor is stored
// as is, else from a whole copy the file makes once.
func (r *TensorReader) readFile(p []byte, off int64) error {
	return r.file.ReadTensorAt(r.Name, p, uint64(off))
}

// WriteTo writes the whole tensor to w, a chunk at a time. Read from the
// file, the bytes are written to L2 on the way (when L2 does not hold them),
// so that the next read finds them there.
func (r *TensorReader) WriteTo(w io.Writer) (int64, error) {
	switch {
	case r.data != nil || r.size == 0:
		n, err := w.Write(r.data)
		return int64(n), err
	case r.entry != nil:
		h := r.entry.Header()
		var total int64
		for i := range h.Chunks {
			r.mu.Lock()
			b, err := r.chunkLocked(i)
			if err != nil {
				r.mu.Unlock()
				return total, err
			}
			n, err := w.Write(b)
			r.mu.Unlock()
			total += int64(n)
			if err != nil {
				return total, err
			}
		}
		return total, nil
	}
	return r.copyFromFile(w)
}

// copyFromFile streams the tensor from its file to w and, through a tee,
// to L2. If L2 fails on the way, the rest still reaches w.
func (r *TensorReader) copyFromFile(w io.Writer) (int64, error) {
	src, err := r.file.TensorReader(r.Name)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	cw := &countingWriter{w: w}
	c := r.c
	if c.l2 == nil {
		_, err := io.CopyBuffer(cw, src, make([]byte, 1<<20))
		return cw.n, err
	}
	tr := &teeReader{r: src, w: cw}
	perr := c.l2.PutStream(r.key, r.DType, r.Shape, uint64(r.size), tr)
	switch {
	case tr.err != nil:
		return cw.n, tr.err // from the file or from w: the caller's failure
	case perr != nil && !errors.Is(perr, errs.ErrClosed):
		c.wb.failed.Add(1)
		c.warn.Warn("tier: writing a tensor to L2 while streaming it failed", "path", r.file.Path(), "tensor", errs.Quote(r.Name), "err", perr)
	}
	if cw.n < r.size {
		// L2 stopped early: finish from the file.
		_, err := io.CopyBuffer(cw, src, make([]byte, 1<<20))
		return cw.n, err
	}
	return cw.n, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// teeReader writes what it reads to w, and remembers a failure of either
// side apart from the end of the stream. The failure sticks: io.ReadFull
// drops an error that comes with the bytes it wanted, so the next Read
// must report it again.
type teeReader struct {
	r   io.Reader
	w   io.Writer
	err error
}

func (t *teeReader) Read(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.r.Read(p)
	if n > 0 {
		if _, werr := t.w.Write(p[:n]); werr != nil {
			t.err = werr
			return n, werr
		}
	}
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// Close releases the reader's file or entry. It is safe to call twice.
func (r *TensorReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.release != nil {
		r.release()
	}
	r.buf = nil
	return nil
}
