// Package local serves client.Reader from a cache in this process, or from
// the warm serve daemon that $MODELCACHE_SERVER names: a program reads
// models one way and chooses by configuration.
//
//	r, err := local.Open(&tier.Options{Dir: "/var/cache/modelcache"}) // or the daemon
//	defer r.Close()
//	err = r.Load(ctx, path, 4, func(t *client.Tensor) error { ... })
//
// It links the whole cache (tier); a program that only dials the daemon
// imports package client alone.
package local

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/tier"
)

var _ client.Reader = (*reader)(nil)

// Open returns the daemon named by $MODELCACHE_SERVER when it is set, and
// otherwise a cache in this process opened with opts, which Close closes.
func Open(opts *tier.Options) (client.Reader, error) {
	c, ok, err := client.FromEnvironment()
	if ok {
		return c, err
	}
	cache, err := tier.Open(opts)
	if err != nil {
		return nil, err
	}
	return &reader{c: cache, owned: true}, nil
}

// New serves client.Reader from c; Close does not close c.
func New(c *tier.Cache) client.Reader { return &reader{c: c} }

type reader struct {
	c     *tier.Cache
	owned bool
}

func (l *reader) Model(ctx context.Context, path string) (*client.Model, error) {
	m, err := l.c.Model(ctx, path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	out := &client.Model{Path: m.Path(), Version: m.Version(), Bytes: m.Bytes(), CachedOnly: m.CachedOnly()}
	for _, t := range m.Tensors() {
		out.Tensors = append(out.Tensors, client.TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, Bytes: t.Bytes, File: t.File})
	}
	return out, nil
}

func fromTier(t *tier.Tensor) *client.Tensor {
	return &client.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, ServedBy: t.ServedBy.String(), Data: t.Bytes()}
}

func (l *reader) Tensor(ctx context.Context, path, name string) (*client.Tensor, error) {
	t, err := l.c.Tensor(ctx, path, name)
	if err != nil {
		return nil, err
	}
	return fromTier(t), nil
}

func (l *reader) Load(ctx context.Context, path string, parallel int, each func(*client.Tensor) error) error {
	m, err := l.c.Model(ctx, path)
	if err != nil {
		return err
	}
	defer m.Close()
	_, err = m.Load(ctx, &tier.LoadOptions{Parallel: parallel}, func(t *tier.Tensor) error { return each(fromTier(t)) })
	return err
}

func (l *reader) Get(ctx context.Context, ns, key string) (*client.Value, error) {
	v, err := l.c.Get(ctx, ns, key, nil)
	if err != nil {
		return nil, err
	}
	return &client.Value{ServedBy: v.ServedBy.String(), DType: v.DType(), Shape: v.Shape(), Data: v.Bytes()}, nil
}

func (l *reader) Put(ctx context.Context, ns, key string, b []byte, o *client.PutOptions) error {
	return l.c.Put(ctx, ns, key, b, (*tier.PutOptions)(o))
}

func (l *reader) Delete(ctx context.Context, ns, key string) error { return l.c.Delete(ctx, ns, key) }

func (l *reader) DropNamespace(ctx context.Context, ns string) error {
	return l.c.DropNamespace(ctx, ns)
}

// Stats are the cache's, as the daemon would send them.
func (l *reader) Stats(context.Context) (*client.Stats, error) {
	return statsOf(l.c.Stats())
}

// statsOf is s as client.Stats: through JSON, as the daemon sends it, so
// that no field is left behind.
func statsOf(s tier.Stats) (*client.Stats, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("local: stats: %w", err)
	}
	var out client.Stats
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("local: stats: %w", err)
	}
	return &out, nil
}

func (l *reader) Close() error {
	if l.owned {
		return l.c.Close()
	}
	return nil
}
