package tier

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/modelcache/modelcache/loader"
)

// Origin is where model files come from on a miss in every tier: it stats
// a version, lists a directory, and opens a file's bytes (loader.Blob, an
// io.ReaderAt with its Identity) or the model file they hold. The default,
// LocalFiles, is the local file system; tests and programs with their own
// storage give another (a slow or failing one, a file that changes between
// stat and open, an object store). Its methods are safe for concurrent use.
// See docs/LOADING.md for what one must do, with an example.
type Origin interface {
	// Stat returns the current version of the file or directory at path.
	Stat(path string) (loader.Identity, error)
	// List returns the files and directories in dir, each with its
	// current version (IsDir for a directory), sorted by path.
	List(dir string) ([]loader.Identity, error)
	// OpenBlob opens the bytes of the file at path, of its current version
	// (the Blob's Identity), for the cache's own reads: the index of a
	// sharded checkpoint, the content digest. The caller closes it if it
	// is an io.Closer.
	OpenBlob(path string) (loader.Blob, error)
	// Open opens the model file at path, parsed and validated; its
	// Identity is the version opened, which may be newer than one Stat
	// returned before. loader.OpenBlob makes one of a Blob.
	Open(path string) (ModelFile, error)
}

// ModelFile is an open model file of one version; *loader.File is one. Its
// methods are safe for concurrent use.
type ModelFile interface {
	Identity() loader.Identity
	Path() string
	Tensors() []loader.TensorInfo
	Tensor(name string) (loader.TensorInfo, bool)
	// ReadTensor returns a new copy of the tensor's bytes.
	ReadTensor(name string) ([]byte, error)
	// ReadTensorInto reads the tensor into dst, exactly its length. It is
	// errs.ErrChanged if the file was changed in place while read.
	ReadTensorInto(name string, dst []byte) error
	// ReadTensorAt reads len(p) bytes of the tensor's value at its byte
	// off, reading about as much of the file as it returns where the
	// tensor is stored as is (see loader.File.ReadTensorAt for the others).
	// Past the tensor's end is io.ErrUnexpectedEOF.
	ReadTensorAt(name string, p []byte, off uint64) error
	// TensorReader streams the tensor's bytes as they are read, for
	// tensors too large to hold whole; its last Read reports a source
	// that turned out bad at the end (a CRC).
	TensorReader(name string) (io.ReadCloser, error)
	Close() error
}

// LocalFiles is the local file system, through package loader: files are
// mapped for their headers and read with parallel positioned reads.
type LocalFiles struct{}

// Stat is loader.Stat.
func (LocalFiles) Stat(path string) (loader.Identity, error) { return loader.Stat(path) }

// List lists dir, following symbolic links; an entry that cannot be
// stat'ed (a dangling link) is left out.
func (LocalFiles) List(dir string) ([]loader.Identity, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("tier: %s: %w", dir, err)
	}
	ents, err := os.ReadDir(abs)
	if err != nil {
		return nil, fmt.Errorf("tier: %w", err)
	}
	out := make([]loader.Identity, 0, len(ents))
	for _, e := range ents {
		if id, err := loader.Stat(filepath.Join(abs, e.Name())); err == nil {
			out = append(out, id)
		}
	}
	return out, nil
}

// OpenBlob is loader.OpenLocal.
func (LocalFiles) OpenBlob(path string) (loader.Blob, error) { return loader.OpenLocal(path) }

// Open is loader.Open.
func (LocalFiles) Open(path string) (ModelFile, error) {
	f, err := loader.Open(path)
	if err != nil {
		return nil, err
	}
	return f, nil
}

// closeBlob closes b if it is an io.Closer.
func closeBlob(b loader.Blob) {
	if c, ok := b.(io.Closer); ok {
		_ = c.Close()
	}
}
