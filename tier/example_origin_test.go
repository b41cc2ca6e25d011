package tier_test

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/tier"
)

// memOrigin serves model files from memory: the origin of docs/LOADING.md.
type memOrigin struct {
	mu    sync.Mutex
	files map[string][]byte          // by absolute path
	ids   map[string]loader.Identity // a new ModTime whenever the bytes change
}

func (o *memOrigin) Stat(p string) (loader.Identity, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if id, ok := o.ids[p]; ok {
		return id, nil
	}
	return loader.Identity{}, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
}

func (o *memOrigin) List(dir string) ([]loader.Identity, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []loader.Identity
	for p, id := range o.ids {
		if filepath.Dir(p) == dir {
			out = append(out, id)
		}
	}
	slices.SortFunc(out, func(a, b loader.Identity) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

func (o *memOrigin) OpenBlob(p string) (loader.Blob, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	id, ok := o.ids[p]
	if !ok {
		return nil, fmt.Errorf("%s: %w", p, fs.ErrNotExist)
	}
	return blob{bytes.NewReader(o.files[p]), id}, nil
}

func (o *memOrigin) Open(p string) (tier.ModelFile, error) {
	b, err := o.OpenBlob(p)
	if err != nil {
		return nil, err
	}
	f, err := loader.OpenBlob(b, "")
	if err != nil {
		return nil, err
	}
	return f, nil
}

type blob struct {
	*bytes.Reader
	id loader.Identity
}

func (b blob) Identity() loader.Identity { return b.id }

// Serve a model from somewhere other than the local file system: the
// origin reads byte ranges, package loader parses them.
func ExampleOrigin() {
	raw, err := os.ReadFile("../testdata/models/posenet.bf16.safetensors")
	if err != nil {
		log.Fatal(err)
	}
	const path = "/models/posenet.safetensors" // on no disk
	o := &memOrigin{
		files: map[string][]byte{path: raw},
		ids:   map[string]loader.Identity{path: {Path: path, Size: int64(len(raw)), ModTime: 1}},
	}
	c, err := tier.Open(&tier.Options{Origin: o})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	t, err := c.Tensor(context.Background(), path, "Const_61")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.DType, t.Shape, t.ServedBy)
	// Output: BF16 [1 1 384 32] source
}
