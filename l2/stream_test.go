package l2

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// readAll reads an entry chunk by chunk.
func readAll(t *testing.T, s *Store, key string) []byte {
	t.Helper()
	r, err := s.OpenEntry(key)
	require.NoError(t, err)
	h := r.Header()
	var out []byte
	for i := range h.Chunks {
		b := make([]byte, h.ChunkLen(i))
		require.NoError(t, r.ReadChunk(i, b))
		out = append(out, b...)
	}
	return out
}

func TestStore_PutStreamRoundTrip(t *testing.T) {
	s := openStore(t, "", func(o *Options) { o.ChunkSize = 64 << 10 })
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 64 << 10, 64<<10 + 1, 1<<20 + 12345} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.IntN(16)) // compressible
		}
		require.NoError(t, s.PutStream("k", "U8", []uint64{uint64(n)}, uint64(n), bytes.NewReader(data)))
		v, err := s.Get("k")
		require.NoError(t, err)
		require.Equal(t, data, v.Data, "n=%d", n)
		require.Equal(t, data, append([]byte{}, readAll(t, s, "k")...), "n=%d", n)
	}
}

type failingReader struct {
	r     io.Reader
	after int
	err   error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, f.err
	}
	p = p[:min(len(p), f.after)]
	n, err := f.r.Read(p)
	f.after -= n
	return n, err
}

// A stream that fails, ends early or runs long leaves the older entry and
// no chunks behind.
func TestStore_PutStreamFailureKeepsTheOldEntry(t *testing.T) {
	s := openStore(t, "", func(o *Options) { o.ChunkSize = 64 << 10 })
	old := bytes.Repeat([]byte("old!"), 50_000)
	require.NoError(t, s.Put("k", "U8", nil, old))
	before := s.Stats()
	data := bytes.Repeat([]byte("new."), 100_000)
	boom := errors.New("CRC-32 mismatch at the end")
	for _, r := range []io.Reader{
		&failingReader{r: bytes.NewReader(data), after: 300_000, err: boom},
		bytes.NewReader(data[:1000]),                                          // short
		io.MultiReader(bytes.NewReader(data), bytes.NewReader([]byte("x"))),   // long
		&failingReader{r: bytes.NewReader(data), after: len(data), err: boom}, // fails at EOF
	} {
		err := s.PutStream("k", "U8", nil, uint64(len(data)), r)
		require.Error(t, err)
		v, err := s.Get("k")
		require.NoError(t, err)
		require.Equal(t, old, v.Data)
	}
	after := s.Stats()
	require.Equal(t, before.Entries, after.Entries)
	require.Equal(t, before.StoredBytes, after.StoredBytes)
	m, err := s.readMeta("k")
	require.NoError(t, err)
	require.Equal(t, len(m.header.Chunks), countChunks(t, s), "no stray chunks")
}

// A value many times the chunk size is written with memory of a few chunks:
// the heap in use, sampled while it is written, stays far below the value.
func TestStore_PutStreamBoundedMemory(t *testing.T) {
	s := openStore(t, "", func(o *Options) { o.ChunkSize = 0 })
	const size = 256 << 20
	defer debug.SetGCPercent(debug.SetGCPercent(20))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	})
	err := s.PutStream("big", "U8", nil, size, io.LimitReader(zeros{}, size))
	close(stop)
	wg.Wait()
	require.NoError(t, err)
	grew := int64(peak.Load()) - int64(base)
	t.Logf("heap grew %d MiB writing a %d MiB value", grew>>20, size>>20)
	require.Less(t, grew, int64(size/2), "the value was held whole")
	r, err := s.OpenEntry("big")
	require.NoError(t, err)
	require.Equal(t, uint64(size), r.Header().Length)
	b := make([]byte, r.Header().ChunkLen(10))
	require.NoError(t, r.ReadChunk(10, b))
	require.Equal(t, make([]byte, len(b)), b)
	require.NoError(t, s.Delete("big"))
	require.ErrorIs(t, r.ReadChunk(11, b), errs.ErrNotFound, "removed while read")
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
