package tier

import (
	"io"

	"github.com/modelcache/modelcache/loader"
)

// Origin is where model files come from on a miss in every tier. The
// default, LocalFiles, is the local file system; tests and programs with
// their own storage give another (a slow or failing one, a file that
// changes between stat and open).
type Origin interface {
	// Stat returns the current version of the file or directory at path.
	Stat(path string) (loader.Identity, error)
	// Open opens the model file at path, parsed and validated; its
	// Identity is the version opened, which may be newer than one Stat
	// returned before.
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

// Open is loader.Open.
func (LocalFiles) Open(path string) (ModelFile, error) {
	f, err := loader.Open(path)
	if err != nil {
		return nil, err
	}
	return f, nil
}
