package client

import (
	"context"

	"github.com/modelcache/modelcache/tier"
)

// Reader is what a model-loading program needs of modelcache, served by
// the cache in this process (Local) or by a warm serve daemon (*Client):
// the program chooses by configuration (Open), not by code.
type Reader interface {
	// Model lists the tensors of the model at path.
	Model(ctx context.Context, path string) (*Model, error)
	// Tensor reads one tensor.
	Tensor(ctx context.Context, path, name string) (*Tensor, error)
	// Load reads every tensor in storage order, parallel at once.
	Load(ctx context.Context, path string, parallel int, each func(*Tensor) error) error
	// Get reads a value (errs.ErrNotFound when absent); Put, Delete and
	// DropNamespace change them.
	Get(ctx context.Context, ns, key string) (*Value, error)
	Put(ctx context.Context, ns, key string, b []byte, o *tier.PutOptions) error
	Delete(ctx context.Context, ns, key string) error
	DropNamespace(ctx context.Context, ns string) error
	// Stats are the cache's.
	Stats(ctx context.Context) (*tier.Stats, error)
	Close() error
}

var (
	_ Reader = (*Client)(nil)
	_ Reader = (*local)(nil)
)

// Open returns the daemon named by $MODELCACHE_SERVER when it is set, and
// otherwise a cache in this process opened with opts.
func Open(opts *tier.Options) (Reader, error) {
	c, ok, err := FromEnvironment()
	if ok {
		return c, err
	}
	cache, err := tier.Open(opts)
	if err != nil {
		return nil, err
	}
	return &local{c: cache, owned: true}, nil
}

// Local serves Reader from a cache in this process; Close does not close
// the cache.
func Local(c *tier.Cache) Reader { return &local{c: c} }

type local struct {
	c     *tier.Cache
	owned bool
}

func (l *local) Model(ctx context.Context, path string) (*Model, error) {
	m, err := l.c.Model(ctx, path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	out := &Model{Path: m.Path(), Version: m.Version(), Bytes: m.Bytes(), CachedOnly: m.CachedOnly()}
	for _, t := range m.Tensors() {
		out.Tensors = append(out.Tensors, TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, Bytes: t.Bytes, File: t.File})
	}
	return out, nil
}

func fromTier(t *tier.Tensor) *Tensor {
	return &Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, ServedBy: t.ServedBy.String(), Data: t.Bytes()}
}

func (l *local) Tensor(ctx context.Context, path, name string) (*Tensor, error) {
	t, err := l.c.Tensor(ctx, path, name)
	if err != nil {
		return nil, err
	}
	return fromTier(t), nil
}

func (l *local) Load(ctx context.Context, path string, parallel int, each func(*Tensor) error) error {
	m, err := l.c.Model(ctx, path)
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = m.Load(ctx, &tier.LoadOptions{Parallel: parallel}, func(t *tier.Tensor) error { return each(fromTier(t)) })
	return err
}

func (l *local) Get(ctx context.Context, ns, key string) (*Value, error) {
	v, err := l.c.Get(ctx, ns, key, nil)
	if err != nil {
		return nil, err
	}
	return &Value{ServedBy: v.ServedBy.String(), DType: v.DType(), Shape: v.Shape(), Data: v.Bytes()}, nil
}

func (l *local) Put(ctx context.Context, ns, key string, b []byte, o *tier.PutOptions) error {
	return l.c.Put(ctx, ns, key, b, o)
}

func (l *local) Delete(ctx context.Context, ns, key string) error { return l.c.Delete(ctx, ns, key) }

func (l *local) DropNamespace(ctx context.Context, ns string) error {
	return l.c.DropNamespace(ctx, ns)
}

func (l *local) Stats(context.Context) (*tier.Stats, error) {
	s := l.c.Stats()
	return &s, nil
}

func (l *local) Close() error {
	if l.owned {
		return l.c.Close()
	}
	return nil
}
