package tier

import (
	"io"
	"sync"
	"time"

	"github.com/modelcache/modelcache/loader"
)

// Throttle is o with every tensor read limited, together, to bytesPerSec:
// a stand-in for a slow origin (network storage, an object store through
// FUSE) when measuring what the cache saves. Headers are not counted.
func Throttle(o Origin, bytesPerSec int64) Origin {
	return &throttled{o: o, rate: &pacer{rate: float64(max(bytesPerSec, 1))}}
}

type throttled struct {
	o    Origin
	rate *pacer
}

func (t *throttled) Stat(path string) (loader.Identity, error) { return t.o.Stat(path) }

func (t *throttled) Open(path string) (ModelFile, error) {
	f, err := t.o.Open(path)
	if err != nil {
		return nil, err
	}
	return &throttledFile{ModelFile: f, rate: t.rate}, nil
}

type throttledFile struct {
	ModelFile
	rate *pacer
}

func (f *throttledFile) ReadTensor(name string) ([]byte, error) {
	b, err := f.ModelFile.ReadTensor(name)
	f.rate.wait(len(b))
	return b, err
}

func (f *throttledFile) ReadTensorInto(name string, dst []byte) error {
	err := f.ModelFile.ReadTensorInto(name, dst)
	f.rate.wait(len(dst))
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
	rate *pacer
}

func (r *throttledReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.rate.wait(n)
	return n, err
}

// pacer spaces transfers as one link of a fixed rate would: each waits
// until the link has carried it after those before it.
type pacer struct {
	rate float64 // bytes a second

	mu   sync.Mutex
	next time.Time // when the link is free
}

func (p *pacer) wait(n int) {
	d := time.Duration(float64(n) / p.rate * float64(time.Second))
	p.mu.Lock()
	now := time.Now()
	start := p.next
	if start.Before(now) {
		start = now
	}
	p.next = start.Add(d)
	done := p.next
	p.mu.Unlock()
	time.Sleep(time.Until(done))
}
