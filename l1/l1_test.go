package l1

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func newCache(t *testing.T, maxBytes int64) *Cache[string, []byte] {
	t.Helper()
	c, err := New[string, []byte](&Options{MaxBytes: maxBytes})
	require.NoError(t, err)
	t.Cleanup(func() {
		s := c.Stats()
		require.LessOrEqual(t, s.Bytes, s.MaxBytes, "budget exceeded")
	})
	return c
}

func TestNew_RequiresBudget(t *testing.T) {
	_, err := New[string, int](nil)
	require.Error(t, err)
	_, err = New[string, int](&Options{MaxBytes: -1})
	require.Error(t, err)
}

func TestCache_GetSet(t *testing.T) {
	c := newCache(t, 10*(100+EntryOverhead))
	_, ok := c.Get("a")
	require.False(t, ok)
	require.True(t, c.Set("a", []byte("A"), 100))
	v, ok := c.Get("a")
	require.True(t, ok)
	require.Equal(t, []byte("A"), v)
	require.True(t, c.Set("a", []byte("A2"), 100))
	v, _ = c.Get("a")
	require.Equal(t, []byte("A2"), v)
	s := c.Stats()
	require.Equal(t, uint64(2), s.Hits)
	require.Equal(t, uint64(1), s.Misses)
	require.Equal(t, 1, s.Entries)
	require.Equal(t, int64(100+EntryOverhead), s.Bytes)
	c.Delete("a")
	_, ok = c.Get("a")
	require.False(t, ok)
	require.Zero(t, c.Stats().Bytes)
}

func TestCache_EvictsLeastRecentlyUsedByBytes(t *testing.T) {
	unit := int64(100 + EntryOverhead)
	c := newCache(t, 3*unit)
	for _, k := range []string{"a", "b", "c"} {
		require.True(t, c.Set(k, nil, 100))
	}
	_, _ = c.Get("a") // b is now the least recently used
	require.True(t, c.Set("d", nil, 100))
	_, ok := c.Get("b")
	require.False(t, ok, "b should have been evicted")
	for _, k := range []string{"a", "c", "d"} {
		_, ok := c.Get(k)
		require.True(t, ok, k)
	}
	// One entry twice the size pushes out two.
	require.True(t, c.Set("big", nil, 2*unit-EntryOverhead))
	s := c.Stats()
	require.Equal(t, uint64(3), s.Evictions)
	require.Equal(t, 2, s.Entries)
}

func TestCache_DeleteFunc(t *testing.T) {
	c := newCache(t, 1<<20)
	for _, k := range []string{"a/1", "a/2", "b/1"} {
		c.Set(k, nil, 10)
	}
	require.Equal(t, 2, c.DeleteFunc(func(k string) bool { return k[0] == 'a' }))
	_, ok := c.Get("b/1")
	require.True(t, ok)
	s := c.Stats()
	require.Equal(t, 1, s.Entries)
	require.Equal(t, int64(10+EntryOverhead), s.Bytes)
}

func TestCache_OversizedEntryNotAdmitted(t *testing.T) {
	c := newCache(t, 1000)
	require.True(t, c.Set("keep", []byte("x"), 10))
	require.True(t, c.Set("big", []byte("old"), 10))
	require.False(t, c.Set("big", []byte("huge"), 1000))
	_, ok := c.Get("big")
	require.False(t, ok, "a refused Set must not leave the old value behind")
	_, ok = c.Get("keep")
	require.True(t, ok, "a refused Set must not flush other entries")
	require.Equal(t, uint64(1), c.Stats().Rejected)
}

func TestCache_Concurrent(t *testing.T) {
	c := newCache(t, 50*(64+EntryOverhead))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := fmt.Sprint((i * (g + 1)) % 200)
				if v, ok := c.Get(k); ok {
					require.Equal(t, k, string(v))
				} else {
					c.Set(k, []byte(k), 64)
				}
			}
		})
	}
	wg.Wait()
	s := c.Stats()
	require.Equal(t, uint64(8*2000), s.Hits+s.Misses)
	require.LessOrEqual(t, s.Entries, 50)
}

func BenchmarkCache_GetHit(b *testing.B) {
	c, _ := New[int, []byte](&Options{MaxBytes: 1 << 30})
	for i := range 1024 {
		c.Set(i, nil, 1024)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Get(i & 1023)
			i++
		}
	})
}
