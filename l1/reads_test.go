package l1

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadRing_OrderFullAndResume(t *testing.T) {
	var r readRing[int, int]
	es := make([]*entry[int, int], 2*ringSize)
	for i := range es {
		es[i] = &entry[int, int]{key: i}
	}
	for i := range ringSize - 1 {
		require.False(t, r.add(es[i]), i)
	}
	require.True(t, r.add(es[ringSize-1]), "the last slot fills the ring")
	require.True(t, r.add(es[ringSize]), "a full ring takes no more")
	var got []int
	r.drain(func(e *entry[int, int]) { got = append(got, e.key) })
	require.Len(t, got, ringSize)
	for i, k := range got {
		require.Equal(t, i, k, "drained in the order recorded")
	}

	// A slot claimed but not yet written ends a drain; the next resumes.
	require.False(t, r.add(es[0]))
	r.tail.Add(1) // claimed by a recorder that has not stored yet
	got = got[:0]
	r.drain(func(e *entry[int, int]) { got = append(got, e.key) })
	require.Equal(t, []int{0}, got)
	r.slots[(r.tail.Load()-1)&(ringSize-1)].Store(es[1])
	got = got[:0]
	r.drain(func(e *entry[int, int]) { got = append(got, e.key) })
	require.Equal(t, []int{1}, got)
	require.Equal(t, r.head.Load(), r.tail.Load())
}

// A hit recorded for an entry that is gone by the time the buffer drains is
// skipped: applying it would relink an entry the policy no longer holds.
func TestCache_BufferedHitOnRemovedEntry(t *testing.T) {
	for _, p := range []Policy{LRU, LFU, TinyLFU, GDSF} {
		c, err := New(&Options[string, int]{MaxBytes: 3, Policy: p, ExcludeOverhead: true, MaxEntryFraction: 1})
		require.NoError(t, err)
		require.NotNil(t, c.reads, p)
		c.Set("a", 1, 1)
		e := c.idx.get(c.hash("a"), "a")
		c.Delete("a")
		c.reads.add(e) // as a Get that found "a" just before the Delete
		for _, k := range []string{"b", "c", "d", "e"} {
			c.Set(k, 1, 1)
			c.Get(k)
		}
		require.Equal(t, 3, c.Stats().Entries, p)
	}
}

// With Options.Hash the cache is deterministic and hits bypass the buffers.
func TestCache_HashAppliesHitsAtOnce(t *testing.T) {
	c, err := New(&Options[int, int]{MaxBytes: 3, Policy: LRU, ExcludeOverhead: true, Hash: mix64})
	require.NoError(t, err)
	require.Nil(t, c.reads)
}
