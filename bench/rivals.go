package bench

import (
	"fmt"

	"github.com/dgraph-io/ristretto/v2"
	arc "github.com/hashicorp/golang-lru/arc/v2"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/maypok86/otter/v2"

	"github.com/modelcache/modelcache/internal/sim"
	"github.com/modelcache/modelcache/l1"
)

// A contender builds a cache of a size (entries, or bytes when weighted);
// ok is false when it cannot weigh entries and the trace is weighted.
type contender struct {
	name string
	make func(size uint64, weighted bool) (c sim.Cache, ok bool)
}

func ours(p l1.Policy) contender {
	return contender{"modelcache " + string(p), func(size uint64, weighted bool) (sim.Cache, bool) {
		c, err := sim.NewL1(p, size, weighted)
		if err != nil {
			panic(err)
		}
		return c, true
	}}
}

// hashicorp adapts golang-lru's caches, whose Add methods differ in results.
type hashicorp struct {
	get func(uint64) (struct{}, bool)
	add func(uint64)
}

func (h hashicorp) Get(k uint64) bool      { _, ok := h.get(k); return ok }
func (h hashicorp) Set(k uint64, _ uint32) { h.add(k) }

type ristrettoCache struct {
	c *ristretto.Cache[uint64, struct{}]
}

func (r ristrettoCache) Get(k uint64) bool { _, ok := r.c.Get(k); return ok }
func (r ristrettoCache) Set(k uint64, size uint32) {
	r.c.Set(k, struct{}{}, int64(size))
	r.c.Wait() // Set is asynchronous: make the replay deterministic
}

type otterCache struct{ c *otter.Cache[uint64, uint32] }

func (o otterCache) Get(k uint64) bool         { _, ok := o.c.GetIfPresent(k); return ok }
func (o otterCache) Set(k uint64, size uint32) { o.c.Set(k, size) }

// unweighted adapts a cache that counts entries and cannot weigh them: it
// sits out weighted traces.
func unweighted(name string, mk func(size int) hashicorp) contender {
	return contender{name, func(size uint64, weighted bool) (sim.Cache, bool) {
		if weighted {
			return nil, false
		}
		return mk(int(size)), true
	}}
}

func contenders() []contender {
	cs := []contender{ours(l1.TinyLFU), ours(l1.S3FIFO), ours(l1.LRU), ours(l1.FIFO), ours(l1.LFU), ours(l1.GDSF)}
	cs = append(cs,
		unweighted("golang-lru LRU", func(size int) hashicorp {
			c, _ := lru.New[uint64, struct{}](size)
			return hashicorp{c.Get, func(k uint64) { c.Add(k, struct{}{}) }}
		}),
		unweighted("golang-lru ARC", func(size int) hashicorp {
			c, _ := arc.NewARC[uint64, struct{}](size)
			return hashicorp{c.Get, func(k uint64) { c.Add(k, struct{}{}) }}
		}),
		unweighted("golang-lru 2Q", func(size int) hashicorp {
			c, _ := lru.New2Q[uint64, struct{}](size)
			return hashicorp{c.Get, func(k uint64) { c.Add(k, struct{}{}) }}
		}),
		contender{"ristretto v2", func(size uint64, weighted bool) (sim.Cache, bool) {
			counters := int64(size) * 10
			if weighted {
				counters = max(int64(size>>20)*10, 1000) // about 1 MiB per entry
			}
			c, err := ristretto.NewCache(&ristretto.Config[uint64, struct{}]{
				NumCounters: counters, MaxCost: int64(size), BufferItems: 64, IgnoreInternalCost: true,
			})
			if err != nil {
				panic(err)
			}
			return ristrettoCache{c}, true
		}},
		contender{"otter v2", func(size uint64, weighted bool) (sim.Cache, bool) {
			o := &otter.Options[uint64, uint32]{Executor: func(fn func()) { fn() }}
			if weighted {
				o.MaximumWeight = size
				o.Weigher = func(_ uint64, v uint32) uint32 { return v }
			} else {
				o.MaximumSize = int(size)
			}
			c, err := otter.New(o)
			if err != nil {
				panic(fmt.Sprint("otter: ", err))
			}
			return otterCache{c}, true
		}},
	)
	return cs
}
