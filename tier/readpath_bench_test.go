package tier

import (
	"context"
	"errors"
	"testing"

	"github.com/modelcache/modelcache/errs"
)

// Every read path, one call at a time, on the test model and a 4 KiB value:
// what each public entry point costs over the tier that serves it. Written
// for issue 21 (one read walk) to compare before and after; it uses only
// API that both had.
//
//	go test -run '^$' -bench 'ReadPath' -count 5 ./tier
func BenchmarkReadPath(b *testing.B) {
	ctx := context.Background()
	const big = "Const_27"  // 288 KiB, the largest tensor
	const small = "Const_8" // 768 bytes, the median
	open := func(b *testing.B, o *Options) *Cache {
		o.Logger = nilLogger()
		c, err := Open(o)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}
	model := func(b *testing.B, c *Cache) *Model {
		m, err := c.Model(ctx, testModel)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Close() })
		return m
	}
	must := func(b *testing.B, err error) {
		if err != nil {
			b.Fatal(err)
		}
	}

	// L1 hits.
	b.Run("Cache.Tensor/L1", func(b *testing.B) {
		c := open(b, &Options{})
		_, err := c.Tensor(ctx, testModel, small)
		must(b, err)
		for b.Loop() {
			t, err := c.Tensor(ctx, testModel, small)
			if err != nil || t.ServedBy != L1 {
				b.Fatal(err, t.ServedBy)
			}
		}
	})
	b.Run("Model.Tensor/L1", func(b *testing.B) {
		c := open(b, &Options{})
		m := model(b, c)
		_, err := m.Tensor(ctx, small)
		must(b, err)
		for b.Loop() {
			if _, err := m.Tensor(ctx, small); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get/L1", func(b *testing.B) {
		c := open(b, &Options{})
		must(b, c.Put(ctx, "ns", "k", make([]byte, 4096), nil))
		for b.Loop() {
			v, err := c.Get(ctx, "ns", "k", nil)
			if err != nil || v.ServedBy != L1 {
				b.Fatal(err)
			}
		}
	})
	b.Run("Get/miss", func(b *testing.B) {
		c := open(b, &Options{Dir: b.TempDir()})
		must(b, c.Put(ctx, "ns", "k", make([]byte, 4096), nil))
		for b.Loop() {
			if _, err := c.Get(ctx, "ns", "absent", nil); !errors.Is(err, errs.ErrNotFound) {
				b.Fatal(err)
			}
		}
	})
	b.Run("OpenValue/L1", func(b *testing.B) {
		c := open(b, &Options{})
		must(b, c.Put(ctx, "ns", "k", make([]byte, 4096), nil))
		p := make([]byte, 4096)
		b.SetBytes(4096)
		for b.Loop() {
			r, err := c.OpenValue(ctx, "ns", "k")
			must(b, err)
			if _, err := r.ReadAt(p, 0); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	b.Run("OpenTensor/L1", func(b *testing.B) {
		c := open(b, &Options{})
		m := model(b, c)
		_, err := m.Tensor(ctx, big)
		must(b, err)
		p := make([]byte, 294912)
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			r, err := m.OpenTensor(ctx, big)
			must(b, err)
			if _, err := r.ReadAt(p, 0); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	loadAll := func(b *testing.B, m *Model, want func(*LoadResult) bool) {
		bufs := map[string][]byte{}
		for _, t := range m.Tensors() {
			bufs[t.Name] = make([]byte, t.Bytes)
		}
		opts := &LoadOptions{Into: func(t *TensorInfo) ([]byte, error) { return bufs[t.Name], nil }}
		b.SetBytes(int64(m.Bytes()))
		for b.Loop() {
			res, err := m.Load(ctx, opts, func(*Tensor) error { return nil })
			if err != nil || !want(res) {
				b.Fatal(err, res)
			}
		}
	}
	b.Run("Model.Load/L1", func(b *testing.B) {
		c := open(b, &Options{})
		m := model(b, c)
		_, err := m.Load(ctx, nil, func(*Tensor) error { return nil })
		must(b, err)
		loadAll(b, m, func(r *LoadResult) bool { return r.L1 == r.Tensors })
	})

	// L2 (L1 admits nothing), L2 files in the page cache.
	b.Run("Cache.Tensor/L2", func(b *testing.B) {
		c := open(b, &Options{Dir: b.TempDir(), MemoryBytes: 1})
		_, err := c.Warm(ctx, testModel)
		must(b, err)
		b.SetBytes(294912)
		for b.Loop() {
			t, err := c.Tensor(ctx, testModel, big)
			if err != nil || t.ServedBy != L2 {
				b.Fatal(err, t.ServedBy)
			}
		}
	})
	b.Run("OpenTensor/L2", func(b *testing.B) {
		c := open(b, &Options{Dir: b.TempDir(), MemoryBytes: 1})
		_, err := c.Warm(ctx, testModel)
		must(b, err)
		m := model(b, c)
		p := make([]byte, 294912)
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			r, err := m.OpenTensor(ctx, big)
			must(b, err)
			if _, err := r.ReadAt(p, 0); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	b.Run("Model.Load/L2", func(b *testing.B) {
		c := open(b, &Options{Dir: b.TempDir(), MemoryBytes: 1})
		_, err := c.Warm(ctx, testModel)
		must(b, err)
		m := model(b, c)
		loadAll(b, m, func(r *LoadResult) bool { return r.L2 == r.Tensors })
	})
	b.Run("Warm/warmed", func(b *testing.B) {
		c := open(b, &Options{Dir: b.TempDir(), MemoryBytes: 1})
		_, err := c.Warm(ctx, testModel)
		must(b, err)
		for b.Loop() {
			_, err := c.Warm(ctx, testModel)
			must(b, err)
		}
	})

	// The source (no L2, L1 admits nothing), the file in the page cache.
	b.Run("Cache.Tensor/source", func(b *testing.B) {
		c := open(b, &Options{MemoryBytes: 1})
		b.SetBytes(294912)
		for b.Loop() {
			t, err := c.Tensor(ctx, testModel, big)
			if err != nil || t.ServedBy != Source {
				b.Fatal(err, t.ServedBy)
			}
		}
	})
	b.Run("OpenTensor/source", func(b *testing.B) {
		c := open(b, &Options{MemoryBytes: 1})
		m := model(b, c)
		p := make([]byte, 294912)
		b.SetBytes(int64(len(p)))
		for b.Loop() {
			r, err := m.OpenTensor(ctx, big)
			must(b, err)
			if _, err := r.ReadAt(p, 0); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	b.Run("Model.Load/source", func(b *testing.B) {
		c := open(b, &Options{MemoryBytes: 1})
		m := model(b, c)
		loadAll(b, m, func(r *LoadResult) bool { return r.Source == r.Tensors })
	})
}
