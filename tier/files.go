package tier

import (
	"container/list"
	"fmt"
	"sync"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
)

// maxIdleFiles bounds the model files kept open with no reader. Each is a
// mapping, and a process has at most vm.max_map_count (65530 by default) of
// them: a service reading a hundred thousand .npy inputs must not hold them
// all open.
const maxIdleFiles = 256

// fileTable keeps model files open, one version per path, so that the
// index of a file is parsed once. A file replaced by a newer version is
// closed when its last reader releases it; beyond maxIdleFiles, files no one
// is reading are closed, least recently released first.
type fileTable struct {
	origin Origin
	// mu guards byPath, byID, idle, closed, and every openFile's refs,
	// stale and elem.
	mu     sync.Mutex
	byPath map[string]*openFile
	// byID holds every version open, by identity: an older one (stale)
	// that a Model still holds is shared by the reads of that version
	// (its TensorReader, the L2 writes its Load leaves), never replaced
	// by the newer file now at its path.
	byID   map[string]*openFile
	closed bool       // by closeAll: nothing opens after it
	idle   *list.List // of *openFile with refs == 0, most recent at the front
	// opening collapses concurrent opens of one version.
	opening sync.Map // identity string -> *sync.Mutex
}

type openFile struct {
	f     ModelFile
	refs  int
	stale bool          // replaced in byPath; close at refs == 0
	elem  *list.Element // in idle, when refs == 0
}

func newFileTable(origin Origin) *fileTable {
	return &fileTable{origin: origin, byPath: make(map[string]*openFile), byID: make(map[string]*openFile), idle: list.New()}
}

// acquire returns the open file for the version id, opening it if needed
// (opened says so), and a release func the caller must call when done.
func (t *fileTable) acquire(id loader.Identity) (f ModelFile, release func(), opened bool, err error) {
	k := id.String() // spelled once: it allocates
	if of := t.get(k); of != nil {
		return of.f, t.releaser(of), false, nil
	}
	m, _ := t.opening.LoadOrStore(k, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	defer t.opening.Delete(k)
	if of := t.get(k); of != nil {
		return of.f, t.releaser(of), false, nil
	}
	f, err = t.origin.Open(id.Path)
	if err != nil {
		return nil, nil, false, err
	}
	of := &openFile{f: f, refs: 1}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		_ = f.Close()
		return nil, nil, false, fmt.Errorf("tier: %w", errs.ErrClosed)
	}
	if old, ok := t.byPath[id.Path]; ok {
		old.stale = true
		if old.refs == 0 {
			t.idle.Remove(old.elem)
			t.forget(old)
			_ = old.f.Close()
		}
	}
	t.byPath[id.Path] = of
	t.byID[f.Identity().String()] = of
	t.mu.Unlock()
	return f, t.releaser(of), true, nil
}

// get returns the open file of the version spelled k (Identity.String)
// with a reference taken, or nil.
func (t *fileTable) get(k string) *openFile {
	t.mu.Lock()
	defer t.mu.Unlock()
	of, ok := t.byID[k]
	if !ok {
		return nil
	}
	if of.refs == 0 {
		t.idle.Remove(of.elem)
		of.elem = nil
	}
	of.refs++
	return of
}

func (t *fileTable) releaser(of *openFile) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			if of.refs--; of.refs > 0 {
				return
			}
			if of.stale {
				t.forget(of)
				_ = of.f.Close()
				return
			}
			of.elem = t.idle.PushFront(of)
			for t.idle.Len() > maxIdleFiles {
				old := t.idle.Remove(t.idle.Back()).(*openFile)
				old.elem = nil
				delete(t.byPath, old.f.Path())
				t.forget(old)
				_ = old.f.Close()
			}
		})
	}
}

// forget removes of from byID, if it is the file held there.
func (t *fileTable) forget(of *openFile) {
	if k := of.f.Identity().String(); t.byID[k] == of {
		delete(t.byID, k)
	}
}

// open is the number of files open, for tests.
func (t *fileTable) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.byPath)
}

func (t *fileTable) closeAll() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	var first error
	for p, of := range t.byPath {
		if err := of.f.Close(); err != nil && first == nil {
			first = err
		}
		delete(t.byPath, p)
	}
	clear(t.byID)
	t.idle.Init()
	return first
}
