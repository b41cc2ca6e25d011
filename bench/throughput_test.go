package bench

import (
	"math/rand/v2"
	"testing"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/maypok86/otter/v2"

	"github.com/modelcache/modelcache/l1"
)

const benchKeys = 1 << 14

type kv interface {
	get(k uint64) bool
	set(k uint64)
}

type oursKV struct{ c *l1.Cache[uint64, uint64] }

func (o oursKV) get(k uint64) bool { _, ok := o.c.Get(k); return ok }
func (o oursKV) set(k uint64)      { o.c.Set(k, k, 0) }

type otterKV struct{ c *otter.Cache[uint64, uint64] }

func (o otterKV) get(k uint64) bool { _, ok := o.c.GetIfPresent(k); return ok }
func (o otterKV) set(k uint64)      { o.c.Set(k, k) }

type lruKV struct{ c *lru.Cache[uint64, uint64] }

func (l lruKV) get(k uint64) bool { _, ok := l.c.Get(k); return ok }
func (l lruKV) set(k uint64)      { l.c.Add(k, k) }

func kvs(b *testing.B) map[string]kv {
	ours := func(p l1.Policy, countHits bool) kv {
		c, err := l1.New(&l1.Options[uint64, uint64]{MaxBytes: 2 * benchKeys * l1.EntryOverhead, Policy: p, CountHits: countHits})
		if err != nil {
			b.Fatal(err)
		}
		return oursKV{c}
	}
	ot := otter.Must(&otter.Options[uint64, uint64]{MaximumSize: 2 * benchKeys})
	l, _ := lru.New[uint64, uint64](2 * benchKeys)
	return map[string]kv{
		"modelcache-s3fifo": ours(l1.S3FIFO, false), "modelcache-s3fifo-counted": ours(l1.S3FIFO, true),
		"modelcache-tinylfu": ours(l1.TinyLFU, false), "modelcache-tinylfu-counted": ours(l1.TinyLFU, true),
		"modelcache-gdsf": ours(l1.GDSF, false),
		"otter":           otterKV{ot}, "golang-lru": lruKV{l},
	}
}

// BenchmarkGetHit: every Get hits; zipf-distributed keys. Run with -cpu 1,2.
func BenchmarkGetHit(b *testing.B) {
	for name, c := range kvs(b) {
		for k := range uint64(benchKeys) {
			c.set(k)
		}
		b.Run(name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 1))
				z := rand.NewZipf(r, 1.01, 1, benchKeys-1)
				keys := make([]uint64, 4096)
				for i := range keys {
					keys[i] = z.Uint64()
				}
				i := 0
				for pb.Next() {
					c.get(keys[i&4095])
					i++
				}
			})
		})
	}
}

// BenchmarkMixed: 90% Get, 10% Set over twice as many keys as fit.
func BenchmarkMixed(b *testing.B) {
	for name, c := range kvs(b) {
		b.Run(name, func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(rand.Uint64(), 2))
				z := rand.NewZipf(r, 1.01, 1, 4*benchKeys-1)
				keys := make([]uint64, 4096)
				for i := range keys {
					keys[i] = z.Uint64()
				}
				i := 0
				for pb.Next() {
					k := keys[i&4095]
					if i%10 == 0 {
						c.set(k)
					} else {
						c.get(k)
					}
					i++
				}
			})
		})
	}
}
