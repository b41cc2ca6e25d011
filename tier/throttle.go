package tier

import (
	"io"

	"github.com/modelcache/modelcache/internal/pace"
	"github.com/modelcache/modelcache/loader"
)

// Throttle is o with every read of bytes (tensors, and the index and
// content digest reads through OpenBlob) limited, together, to bytesPerSec:
// a stand-in for a slow origin (network storage, an object store through
// FUSE) when measuring what the cache saves. Model file headers are not
// counted.
func Throttle(o Origin, bytesPerSec int64) Origin {
	return &throttled{o: o, rate: pace.New(bytesPerSec)}
}

type throttled struct {
	o    Origin
	rate *pace.Link
}

func (t *throttled) Stat(path string) (loader.Identity, error) { return t.o.Stat(path) }

func (t *throttled) List(dir string) ([]loader.Identity, error) { return t.o.List(dir) }

func (t *throttled) OpenBlob(path string) (loader.Blob, error) {
	b, err := t.o.OpenBlob(path)
	if err != nil {
		return nil, err
	}
	return &throttledBlob{Blob: b, rate: t.rate}, nil
}

func (t *throttled) Open(path string) (ModelFile, error) {
	f, err := t.o.Open(path)
	if err != nil {
		return nil, err
	}
	return &throttledFile{ModelFile: f, rate: t.rate}, nil
}

type throttledBlob struct {
	loader.Blob
	rate *pace.Link
}

func (b *throttledBlob) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.Blob.ReadAt(p, off)
	b.rate.Wait(n)
	return n, err
}

func (b *throttledBlob) Close() error {
	if c, ok := b.Blob.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

type throttledFile struct {
	ModelFile
	rate *pace.Link
}

func (f *throttledFile) ReadTensor(name string) ([]byte, error) {
	b, err := f.ModelFile.ReadTensor(name)
	f.rate.Wait(len(b))
	return b, err
}

func (f *throttledFile) ReadTensorInto(name string, dst []byte) error {
	err := f.ModelFile.ReadTensorInto(name, dst)
	f.rate.Wait(len(dst))
	return err
}

func (f *throttledFile) ReadTensorAt(name string, p []byte, off uint64) error {
	err := f.ModelFile.ReadTensorAt(name, p, off)
	f.rate.Wait(len(p))
	return err
}

func (f *throttledFile) TensorReader(name string) (io.ReadCloser, error) {
	r, err := f.ModelFile.TensorReader(name)
	if err != nil {
		return nil, err
	}
	return &throttledReader{ReadCloser: r, rate: f.rate}, nil
}

type throttledReader struct {
	io.ReadCloser
	rate *pace.Link
}

func (r *throttledReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.rate.Wait(n)
	return n, err
}
