package tier

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/key"
	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/loader"
)

// A model whose file is gone (an origin that is down, a file deleted after
// it was warmed) is still served from L2 when L2 holds every tensor of one
// version of it: Warm records, when it has stored them all, how many there
// are, and Cache.Model lists them from L2's index.

// completeAux names the record of a version whose every tensor Warm stored:
// "complete\x00" + identity -> the count.
const completeAux = "complete\x00"

// markComplete records that L2 holds all n tensors of version id.
func (c *Cache) markComplete(id loader.Identity, n int) {
	if c.l2 == nil || c.digest {
		return
	}
	if err := c.rec.Set(completeAux+id.String(), []byte(strconv.Itoa(n))); err != nil {
		c.warn.Warn("tier: recording a complete model failed", "path", id.Path, "err", err)
	}
}

// forgetComplete drops the records of the versions of path that drop says.
func (c *Cache) forgetComplete(path string, drop func(key.Group) bool) {
	recs, err := c.rec.Get(completeAux + path + "\x00")
	if err != nil {
		return
	}
	for name := range recs {
		id, err := loader.ParseIdentity(strings.TrimPrefix(name, completeAux))
		if err != nil || drop(key.File(id)) {
			_ = c.rec.Set(name, nil)
		}
	}
}

// cachedModel is the model at path served from L2 alone: the newest version
// of it whose every tensor L2 holds, or an error.
func (c *Cache) cachedModel(path string) (*Model, error) {
	if c.l2 == nil || c.digest {
		return nil, errs.ErrNotFound
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	recs, err := c.rec.Get(completeAux + abs + "\x00")
	if err != nil || len(recs) == 0 {
		return nil, errs.ErrNotFound
	}
	byVersion := map[string][]*l2.EntryInfo{}
	names := map[*l2.EntryInfo]string{}
	if err := c.l2.Range(key.HeadPrefix(key.FileTensor, abs), func(e *l2.EntryInfo) bool {
		if g, name, ok := key.Parse(e.Key); ok && g.Kind == key.FileTensor {
			byVersion[g.Identity()] = append(byVersion[g.Identity()], e)
			names[e] = name
		}
		return true
	}); err != nil {
		return nil, err
	}
	var best string
	var newest int64
	for name, v := range recs {
		id := strings.TrimPrefix(name, completeAux)
		n, err := strconv.Atoi(string(v))
		es := byVersion[id]
		if err != nil || len(es) != n || n == 0 {
			continue // some of its tensors were evicted since
		}
		var written int64
		for _, e := range es {
			written = max(written, e.Written.UnixNano())
		}
		if best == "" || written > newest {
			best, newest = id, written
		}
	}
	if best == "" {
		return nil, errs.ErrNotFound
	}
	identity, err := loader.ParseIdentity(best)
	if err != nil {
		return nil, err
	}
	// Range lists in key order: the tensors by name, as the file's own
	// order is unknown (their offsets, all 0, keep it in add's stable sort).
	f := &cachedFile{id: identity}
	for _, e := range byVersion[best] {
		f.tensors = append(f.tensors, loader.TensorInfo{Name: names[e], DType: loader.DType(e.DType), Shape: e.Shape, Length: e.LogicalBytes})
	}
	m := &Model{c: c, path: abs, byName: map[string]int{}}
	pf := &pinnedFile{f: f, release: func() {}, group: key.File(identity)}
	m.files = append(m.files, pf)
	if err := m.add(pf); err != nil {
		return nil, err
	}
	m.version = m.versionOf()
	m.cachedOnly = true
	c.warn.Warn("tier: model file unavailable; serving the version the cache holds whole", "path", abs, "version", m.version)
	return m, nil
}

// cachedFile stands for a model file that is gone: it lists the tensors L2
// holds, and reading it is os.ErrNotExist.
type cachedFile struct {
	id      loader.Identity
	tensors []loader.TensorInfo
}

func (f *cachedFile) Identity() loader.Identity         { return f.id }
func (f *cachedFile) Path() string                      { return f.id.Path }
func (f *cachedFile) Tensors() []loader.TensorInfo      { return f.tensors }
func (f *cachedFile) Close() error                      { return nil }
func (f *cachedFile) ReadTensor(string) ([]byte, error) { return nil, f.gone() }
func (f *cachedFile) ReadTensorInto(string, []byte) error {
	return f.gone()
}
func (f *cachedFile) ReadTensorAt(string, []byte, uint64) error  { return f.gone() }
func (f *cachedFile) TensorReader(string) (io.ReadCloser, error) { return nil, f.gone() }

func (f *cachedFile) Tensor(name string) (loader.TensorInfo, bool) {
	for _, t := range f.tensors {
		if t.Name == name {
			return t, true
		}
	}
	return loader.TensorInfo{}, false
}

func (f *cachedFile) gone() error {
	return fmt.Errorf("tier: %s: the file is gone and the cache lost this tensor: %w", f.id.Path, os.ErrNotExist)
}
