package l1

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// The table grows, cleans its tombstones and shrinks, and every key stays
// findable through all of it.
func TestIndex_GrowDeleteShrink(t *testing.T) {
	var x index[int, int]
	x.init()
	ent := func(k int) *entry[int, int] {
		return &entry[int, int]{key: k, value: k * 10, hash: uint64(k) * 0x9e3779b97f4a7c15}
	}
	const n = 20000
	for k := range n {
		x.insert(ent(k))
	}
	for k := range n {
		e := x.get(uint64(k)*0x9e3779b97f4a7c15, k)
		require.NotNil(t, e, k)
		require.Equal(t, k*10, e.value)
	}
	slots := func() (n int) {
		for i := range x.shards {
			n += len(x.shards[i].tab.Load().slots)
		}
		return n
	}
	grown := slots()
	require.GreaterOrEqual(t, grown, 2*n, "a table is at most half full")
	// Delete and re-insert many times: tombstones must not pile up.
	for round := range 20 {
		for k := 0; k < n; k += 2 {
			h := uint64(k) * 0x9e3779b97f4a7c15
			require.NotNil(t, x.remove(h, k), "round %d key %d", round, k)
			require.Nil(t, x.get(h, k))
			x.insert(ent(k))
		}
	}
	require.LessOrEqual(t, slots(), grown, "tombstones were not cleaned")
	for k := range n - 100 {
		x.remove(uint64(k)*0x9e3779b97f4a7c15, k)
	}
	for k := range 100 {
		x.insert(ent(n + k))
	}
	require.Less(t, slots(), grown/8, "an emptied table did not shrink")
	var seen int
	x.each(func(*entry[int, int]) { seen++ })
	require.Equal(t, 200, seen)
}

// Keys whose hashes collide are told apart by key; a zero key is not
// mistaken for a tombstone.
func TestIndex_CollisionsAndZeroKey(t *testing.T) {
	var x index[int, int]
	x.init()
	for k := range 50 {
		x.insert(&entry[int, int]{key: k, value: k, hash: 7})
	}
	x.remove(7, 0)
	require.Nil(t, x.get(7, 0))
	for k := 1; k < 50; k++ {
		require.Equal(t, k, x.get(7, k).value)
	}
	require.Nil(t, x.get(7, 50))
}

// Readers never see a value after the Set that replaced it, or after the
// Delete that removed it, returned, even while the tables resize under them.
func TestCache_NoStaleReadsWhileResizing(t *testing.T) {
	c, err := New(&Options[int, int]{MaxBytes: 1 << 30, MaxEntryFraction: 1})
	require.NoError(t, err)
	const keys = 4096
	var version [keys]atomic.Int64 // the latest value Set for each key
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := i * 7919 % keys
				floor := version[k].Load()
				if v, ok := c.Get(k); ok && int64(v) < floor {
					t.Errorf("key %d: read %d after %d was set", k, v, floor)
					return
				}
			}
		})
	}
	for round := range 30 {
		for k := range keys {
			v := round*keys + k
			c.Set(k, v, 8)
			version[k].Store(int64(v))
		}
		for k := 0; k < keys; k += 3 {
			c.Delete(k) // tombstones; the next round's Sets rehash
		}
	}
	close(stop)
	wg.Wait()
}
