package tier

import (
	"sync"

	"github.com/modelcache/modelcache/loader"
)

// fileTable keeps model files open, one version per path, so that the
// index of a file is parsed once. A file replaced by a newer version is
// closed when its last reader releases it.
type fileTable struct {
	// mu guards byPath and every openFile's refs and stale.
	mu     sync.Mutex
	byPath map[string]*openFile
	// opening collapses concurrent opens of one version.
	opening sync.Map // identity string -> *sync.Mutex
}

type openFile struct {
	f     *loader.File
	refs  int
	stale bool // replaced in byPath; close at refs == 0
}

func newFileTable() *fileTable { return &fileTable{byPath: make(map[string]*openFile)} }

// acquire returns the open file for the version id, opening it if needed
// (opened says so), and a release func the caller must call when done.
func (t *fileTable) acquire(id loader.Identity) (f *loader.File, release func(), opened bool, err error) {
	if of := t.get(id); of != nil {
		return of.f, t.releaser(of), false, nil
	}
	m, _ := t.opening.LoadOrStore(id.String(), &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	defer t.opening.Delete(id.String())
	if of := t.get(id); of != nil {
		return of.f, t.releaser(of), false, nil
	}
	f, err = loader.Open(id.Path)
	if err != nil {
		return nil, nil, false, err
	}
	of := &openFile{f: f, refs: 1}
	t.mu.Lock()
	if old, ok := t.byPath[id.Path]; ok {
		old.stale = true
		if old.refs == 0 {
			_ = old.f.Close()
		}
	}
	t.byPath[id.Path] = of
	t.mu.Unlock()
	return f, t.releaser(of), true, nil
}

// get returns the open file of version id with a reference taken, or nil.
func (t *fileTable) get(id loader.Identity) *openFile {
	t.mu.Lock()
	defer t.mu.Unlock()
	of, ok := t.byPath[id.Path]
	if !ok || of.f.Identity() != id {
		return nil
	}
	of.refs++
	return of
}

func (t *fileTable) releaser(of *openFile) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			of.refs--
			if of.stale && of.refs == 0 {
				_ = of.f.Close()
			}
			t.mu.Unlock()
		})
	}
}

func (t *fileTable) closeAll() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var first error
	for p, of := range t.byPath {
		if err := of.f.Close(); err != nil && first == nil {
			first = err
		}
		delete(t.byPath, p)
	}
	return first
}
