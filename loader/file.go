package loader

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/edsrzf/mmap-go"

	"github.com/modelcache/modelcache/errs"
)

// Format is the kind of a model file.
type Format string

// The formats Open reads.
const (
	Safetensors Format = "safetensors"
	GGUF        Format = "gguf"
	NPY         Format = "npy"
	NPZ         Format = "npz"
	// Plain is any other file: one tensor named PlainTensor, dtype U8, the
	// whole file.
	Plain Format = "plain"
)

// PlainTensor is the name of a plain file's single tensor.
const PlainTensor = "-"

// Source is a model that lists its tensors and reads them: a *File (one
// file of any format) or a *Sharded checkpoint.
type Source interface {
	Path() string
	Format() Format
	Tensors() []TensorInfo
	Tensor(name string) (TensorInfo, bool)
	// ReadTensor returns a new copy of the tensor's bytes, little-endian
	// and in row-major (C) order whatever the file stores.
	ReadTensor(name string) ([]byte, error)
	Close() error
}

// File is an open, validated model file. Its methods are safe for
// concurrent use. It never hands out bytes of its mapping, only copies, so
// Close may unmap as soon as no ReadTensor is running.
type File struct {
	id       Identity
	format   Format
	tensors  []TensorInfo
	reads    []tensorRead // parallel to tensors
	byName   map[string]int
	metadata map[string]string
	gguf     *ggufHeader

	// mu guards data and src: readers hold it shared while they copy from
	// the mapping or read the source, Close holds it exclusively to unmap
	// and close.
	mu     sync.RWMutex
	src    Blob       // what every read goes through
	local  *localBlob // src, when it is a local file: mapped, and checked with fstat
	data   mmap.MMap  // local: the whole file
	closed bool

	// decoded is the last tensor not stored as is that ReadTensorAt
	// decoded whole, kept for the next piece of it; dmu guards it.
	dmu     sync.Mutex
	decoded struct {
		name string
		b    []byte
	}
}

// tensorRead says how a tensor's stored bytes become its value.
type tensorRead struct {
	stored  uint64 // bytes at Offset: Length, or the compressed size
	member  bool   // stored bytes are a whole .npz member, CRC-checked
	deflate bool   // the member is a raw DEFLATE stream
	skip    uint64 // member bytes to drop first (its .npy header)
	crc     uint32 // CRC-32 of the whole member, uncompressed
	swap    int    // byte-swap elements of this width (big-endian .npy)
	fortran bool   // stored in column-major order (.npy fortran_order)
	elem    int    // element size, for fortran
}

// invalid is errs.ErrInvalidModel for the file at path, with the defect
// described by format and args; a cause given with %w stays in the chain.
func invalid(path, format string, args ...any) error {
	return fmt.Errorf("loader: %s: %w: %w", path, errs.ErrInvalidModel, fmt.Errorf(format, args...))
}

// formatOf tells the format of the file at path from its name, then from its
// first bytes: .safetensors, .gguf, .npy and .npz by extension; a file with
// another name whose first bytes are GGUF's or NumPy's magic as such; any
// other file as Plain. A malformed .safetensors file is therefore an error,
// never a plain file.
func formatOf(path string, head []byte) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".safetensors":
		return Safetensors
	case ".gguf":
		return GGUF
	case ".npy":
		return NPY
	case ".npz":
		return NPZ
	}
	switch {
	case bytes.HasPrefix(head, []byte(ggufMagic)):
		return GGUF
	case bytes.HasPrefix(head, []byte(npyMagic)):
		return NPY
	}
	return Plain
}

// Open opens and validates the model file at path, in the format formatOf
// tells, and maps it into memory. The identity is that of the file as
// opened, so bytes read later belong to that version even if the path is
// replaced meanwhile.
func Open(path string) (*File, error) { return OpenFormat(path, "") }

// OpenFormat is Open with the format given; "" detects it.
func OpenFormat(path string, format Format) (*File, error) {
	b, err := openLocal(path)
	if err != nil {
		return nil, err
	}
	return OpenBlob(b, format)
}

// OpenBlob opens and validates the model file b holds, in the format given
// or, with "", the one formatOf tells from its Identity's Path and first
// bytes. The File takes b: it closes b at Close, and OpenBlob closes it on
// an error. Headers are read through b.ReadAt as far as they go, tensors
// when they are read; a Blob from OpenLocal is mapped and read as Open
// does.
func OpenBlob(b Blob, format Format) (*File, error) {
	id := b.Identity()
	m := &File{id: id, src: b}
	if id.Size < 0 {
		_ = m.Close()
		return nil, invalid(id.Path, "size %d", id.Size)
	}
	fb := &fileBytes{size: uint64(id.Size), ra: b}
	if lb, ok := b.(*localBlob); ok {
		m.local = lb
		if id.Size > 0 {
			var err error
			if m.data, err = mmap.Map(lb.fd, mmap.RDONLY, 0); err != nil {
				_ = m.Close()
				return nil, fmt.Errorf("loader: %s: mmap: %w", id.Path, err)
			}
			fb.mapped, fb.size = m.data, uint64(len(m.data))
		}
	}
	var err error
	if format == "" {
		var head []byte
		if ferr := guarded(func() { head, err = fb.read(0, min(fb.size, 8)) }); ferr != nil {
			err = ferr
		}
		if err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("loader: %s: %w", id.Path, err)
		}
		format = formatOf(id.Path, head)
	}
	m.format = format
	// The file may shrink under the mapping while it is parsed.
	if ferr := guarded(func() { err = m.parse(fb) }); ferr != nil {
		err = fmt.Errorf("loader: %s: %w (was the file truncated while in use?)", id.Path, ferr)
	}
	if err != nil {
		_ = m.Close()
		return nil, err
	}
	m.byName = make(map[string]int, len(m.tensors))
	for i, t := range m.tensors {
		m.byName[t.Name] = i
	}
	if m.reads == nil {
		m.reads = make([]tensorRead, len(m.tensors))
		for i, t := range m.tensors {
			m.reads[i].stored = t.Length
		}
	}
	return m, nil
}

func (m *File) parse(fb *fileBytes) error {
	err := m.parseFormat(fb)
	// A read that failed is the source's trouble, not a defect of the file.
	var re *readError
	if errors.As(err, &re) {
		return fmt.Errorf("loader: %s: %w", m.id.Path, re)
	}
	return err
}

func (m *File) parseFormat(fb *fileBytes) error {
	abs, size := m.id.Path, fb.size
	if m.format != Plain {
		head, err := fb.read(0, min(size, 1024))
		if err != nil {
			return err
		}
		if what := standIn(head); what != "" {
			return invalid(abs, "%s", what)
		}
	}
	switch m.format {
	case Safetensors:
		if size < 8 {
			return invalid(abs, "%d bytes, too short for a safetensors header", size)
		}
		p, err := fb.read(0, 8)
		if err != nil {
			return err
		}
		n := binary.LittleEndian.Uint64(p)
		// Check the claimed length before using it.
		if n > maxSafetensorsHeader {
			return invalid(abs, "header length %d exceeds the %d byte limit", n, maxSafetensorsHeader)
		}
		if n > size-8 {
			return invalid(abs, "header length %d runs past the end of a %d byte file", n, size)
		}
		head, err := fb.read(8, n)
		if err != nil {
			return err
		}
		h, err := parseSafetensors(head, size)
		if err != nil {
			return invalid(abs, "%w", err)
		}
		m.tensors, m.metadata = h.tensors, h.metadata
	case GGUF:
		h, err := ggufFrom(fb)
		if err != nil {
			return invalid(abs, "%w", err)
		}
		m.tensors, m.gguf, m.metadata = h.tensors, h, h.stringMetadata()
	case NPY:
		a, err := npyFrom(fb)
		if err != nil {
			return invalid(abs, "%w", err)
		}
		a.tensor.Name = strings.TrimSuffix(filepath.Base(abs), filepath.Ext(abs))
		m.tensors, m.reads = []TensorInfo{a.tensor}, []tensorRead{a.read()}
	case NPZ:
		ts, rs, err := parseNPZ(fb)
		if err != nil {
			return invalid(abs, "%w", err)
		}
		m.tensors, m.reads = ts, rs
	case Plain:
		m.tensors = []TensorInfo{{Name: PlainTensor, DType: U8, Shape: []uint64{size}, Length: size}}
	default:
		return fmt.Errorf("loader: %s: format %q: %w", abs, m.format, errs.ErrUnsupported)
	}
	return nil
}

// standIn says what a file named as a model holds instead, when it is one
// of the usual stand-ins for a model that was never downloaded: a git-lfs
// pointer, a web page, an object store's XML error. "" otherwise.
func standIn(data []byte) string {
	head := bytes.TrimLeft(data[:min(len(data), 1024)], "\ufeff \t\r\n")
	lower := bytes.ToLower(head[:min(len(head), 16)])
	switch {
	case bytes.HasPrefix(head, []byte("version https://git-lfs.github.com/spec/")):
		return "a git-lfs pointer, not the model: run git lfs pull"
	case bytes.HasPrefix(lower, []byte("<!doctype html")), bytes.HasPrefix(lower, []byte("<html")):
		return "an HTML page, not the model (did a download save an error or login page?)"
	case bytes.HasPrefix(lower, []byte("<?xml")):
		return "an XML document, not the model (did a download save an object store's error?)"
	}
	return ""
}

// Identity is the version of the file that was opened.
func (f *File) Identity() Identity { return f.id }

// Path is the file's absolute path.
func (f *File) Path() string { return f.id.Path }

// Format is the file's format.
func (f *File) Format() Format { return f.format }

// Tensors lists the tensors: in the order of their offsets for
// safetensors, in the file's order for the others. The slice is shared; do
// not modify it.
func (f *File) Tensors() []TensorInfo { return f.tensors }

// Tensor looks up one tensor by name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.tensors[i], true
}

// Metadata is the file's metadata as strings: safetensors' __metadata__, or
// GGUF's key-value pairs formatted (arrays of more than 16 elements are
// abbreviated). Nil for the other formats.
func (f *File) Metadata() map[string]string { return f.metadata }

// ReadTensor returns a new copy of the named tensor's bytes, little-endian
// and row-major. A file truncated or otherwise unreadable underneath the
// mapping is an error, not a crash.
func (f *File) ReadTensor(name string) ([]byte, error) {
	i, err := f.index(name)
	if err != nil {
		return nil, err
	}
	t, r := f.tensors[i], f.reads[i]
	stored := make([]byte, r.stored)
	closed, err := f.copyOut(stored, t.Offset)
	if closed {
		return nil, fmt.Errorf("loader: %s: %w", f.id.Path, errs.ErrClosed)
	}
	if err != nil {
		return nil, f.readFailed(name, err)
	}
	out := stored
	switch {
	case r.deflate:
		if out, err = inflate(stored, r.skip, t.Length, r.crc); err != nil {
			return nil, invalid(f.id.Path, "tensor %s: %w", errs.Quote(name), err)
		}
	case r.member:
		if c := crc32.ChecksumIEEE(stored); c != r.crc {
			return nil, invalid(f.id.Path, "tensor %s: CRC-32 %08x, the archive says %08x", errs.Quote(name), c, r.crc)
		}
		out = stored[r.skip:]
	}
	if r.swap > 1 {
		swapBytes(out, r.swap)
	}
	if r.fortran {
		out = fortranToC(out, t.Shape, r.elem)
	}
	return out, nil
}

// copyOut copies from the mapping at off, or reads the source there,
// unless the file is closed.
func (f *File) copyOut(dst []byte, off uint64) (closed bool, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.closed {
		return true, nil
	}
	if f.local == nil {
		return false, readFull(f.src, dst, int64(off))
	}
	return false, guarded(func() { copy(dst, f.data[off:off+uint64(len(dst))]) })
}

// inflate decompresses a raw DEFLATE stream that must hold exactly skip+n
// bytes whose CRC-32 is crc, and returns the last n.
func inflate(comp []byte, skip, n uint64, crc uint32) ([]byte, error) {
	zr := flate.NewReader(bytes.NewReader(comp))
	defer zr.Close()
	h := crc32.NewIEEE()
	if _, err := io.CopyN(h, zr, int64(skip)); err != nil {
		return nil, fmt.Errorf("inflating: %w", err)
	}
	// Grow with what actually inflates, not with what the archive declares.
	var buf bytes.Buffer
	buf.Grow(int(min(n, 64<<20)))
	if k, err := io.CopyN(&buf, zr, int64(n)); err != nil {
		return nil, fmt.Errorf("inflating: %d of %d bytes: %w", k, n, err)
	}
	out := buf.Bytes()
	h.Write(out)
	if k, err := io.ReadFull(zr, make([]byte, 1)); k != 0 || err != io.EOF {
		if k != 0 {
			return nil, fmt.Errorf("member inflates to more than its declared %d bytes", skip+n)
		}
		return nil, fmt.Errorf("DEFLATE stream does not end after %d bytes: %w", skip+n, err)
	}
	if h.Sum32() != crc {
		return nil, fmt.Errorf("CRC-32 %08x, the archive says %08x", h.Sum32(), crc)
	}
	return out, nil
}

// guarded runs f, turning the fault raised by a page of a mapping that no
// longer exists (a file truncated underneath it) into an error.
func guarded(f func()) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			// A fault carries its address (see debug.SetPanicOnFault);
			// anything else is a bug, not a vanished page.
			if _, ok := r.(interface{ Addr() uintptr }); !ok {
				panic(r)
			}
			err = fmt.Errorf("memory fault reading the mapped file: %v", r)
		}
	}()
	f()
	return nil
}

// Close unmaps the file and closes its source once the reads in progress
// are done. Bytes returned by ReadTensor stay valid.
func (f *File) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	err := closeBlob(f.src)
	f.src, f.local = nil, nil
	if f.data != nil {
		err = errors.Join(f.data.Unmap(), err)
		f.data = nil
	}
	f.mu.Unlock()
	f.dmu.Lock()
	f.decoded.name, f.decoded.b = "", nil
	f.dmu.Unlock()
	return err
}
