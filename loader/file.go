package loader

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"

	"github.com/edsrzf/mmap-go"

	"github.com/modelcache/modelcache/errs"
)

// File is an open, validated model file. Its methods are safe for
// concurrent use.
type File struct {
	id       Identity
	tensors  []TensorInfo
	byName   map[string]int
	metadata map[string]string

	// mu guards data: readers hold it shared while they copy from the
	// mapping, Close holds it exclusively to unmap.
	mu   sync.RWMutex
	data mmap.MMap
}

func invalid(path, format string, args ...any) error {
	return fmt.Errorf("loader: %s: %w: %s", path, errs.ErrInvalidModel, fmt.Sprintf(format, args...))
}

// Open opens and validates the safetensors file at path and maps it into
// memory. The identity is that of the file as opened, so bytes read later
// belong to that version even if the path is replaced meanwhile.
func Open(path string) (*File, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("loader: %s: %w", path, err)
	}
	f, err := os.Open(abs)
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("loader: %s: %w", abs, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, invalid(abs, "not a regular file")
	}
	size := fi.Size()
	var prefix [8]byte
	if _, err := f.ReadAt(prefix[:], 0); err != nil {
		if err == io.EOF {
			return nil, invalid(abs, "%d bytes, too short for a safetensors header", size)
		}
		return nil, fmt.Errorf("loader: %s: %w", abs, err)
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	// Check the claimed length before allocating for it.
	if n > MaxSafetensorsHeader {
		return nil, invalid(abs, "header length %d exceeds the %d byte limit", n, MaxSafetensorsHeader)
	}
	if n > uint64(size)-8 {
		return nil, invalid(abs, "header length %d runs past the end of a %d byte file", n, size)
	}
	head := make([]byte, n)
	if _, err := f.ReadAt(head, 8); err != nil {
		return nil, fmt.Errorf("loader: %s: reading header: %w", abs, err)
	}
	h, err := ParseSafetensors(head, uint64(size))
	if err != nil {
		return nil, invalid(abs, "%v", err)
	}
	m := &File{
		id:       identityOf(abs, fi),
		tensors:  h.Tensors,
		byName:   make(map[string]int, len(h.Tensors)),
		metadata: h.Metadata,
	}
	for i, t := range h.Tensors {
		m.byName[t.Name] = i
	}
	if m.data, err = mmap.Map(f, mmap.RDONLY, 0); err != nil {
		return nil, fmt.Errorf("loader: %s: mmap: %w", abs, err)
	}
	return m, nil
}

// Identity is the version of the file that was opened.
func (f *File) Identity() Identity { return f.id }

// Path is the file's absolute path.
func (f *File) Path() string { return f.id.Path }

// Tensors lists the tensors in the order of their offsets. The slice is
// shared; do not modify it.
func (f *File) Tensors() []TensorInfo { return f.tensors }

// Tensor looks up one tensor by name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.tensors[i], true
}

// Metadata is the file's string metadata (safetensors __metadata__), or nil.
func (f *File) Metadata() map[string]string { return f.metadata }

// ReadTensor returns a new copy of the named tensor's bytes. A file truncated
// or otherwise unreadable underneath the mapping is an error, not a crash.
func (f *File) ReadTensor(name string) ([]byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("loader: %s: tensor %q: %w", f.id.Path, name, errs.ErrNotFound)
	}
	buf := make([]byte, t.Length)
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.data == nil {
		return nil, fmt.Errorf("loader: %s: %w", f.id.Path, errs.ErrClosed)
	}
	if err := copyGuarded(buf, f.data[t.Offset:t.Offset+t.Length]); err != nil {
		return nil, fmt.Errorf("loader: %s: tensor %q: %w (was the file truncated while in use?)", f.id.Path, name, err)
	}
	return buf, nil
}

// copyGuarded copies from a mapping, turning the fault raised by a page that
// no longer exists into an error.
func copyGuarded(dst, src []byte) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if r := recover(); r != nil {
			err = fmt.Errorf("memory fault reading the mapped file: %v", r)
		}
	}()
	copy(dst, src)
	return nil
}

// Close unmaps the file. Bytes returned by ReadTensor stay valid.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.data == nil {
		return nil
	}
	err := f.data.Unmap()
	f.data = nil
	return err
}
