package tier

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/key"
	"github.com/modelcache/modelcache/l2"
)

// counted is a fill that counts its calls and returns want.
func counted(n *atomic.Int32, want []byte) FillFunc {
	return func(context.Context) ([]byte, error) { n.Add(1); return want, nil }
}

func TestValues_FillThenL1ThenL2(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	want := []byte("the output of a layer")
	var fills atomic.Int32

	c, err := Open(&Options{Dir: dir, Logger: nilLogger()})
	require.NoError(t, err)
	v, err := c.Get(ctx, "outputs", "prompt-1", counted(&fills, want))
	require.NoError(t, err)
	require.Equal(t, Fill, v.ServedBy)
	require.Equal(t, want, v.Bytes())
	require.False(t, v.Stored().IsZero())
	v, err = c.Get(ctx, "outputs", "prompt-1", counted(&fills, want))
	require.NoError(t, err)
	require.Equal(t, L1, v.ServedBy)
	require.Equal(t, want, v.Bytes())
	require.NoError(t, c.Close()) // finishes the queued L2 write

	c = openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	v, err = c.Get(ctx, "outputs", "prompt-1", counted(&fills, want))
	require.NoError(t, err)
	require.Equal(t, L2, v.ServedBy)
	require.Equal(t, want, v.Bytes())
	require.Equal(t, int32(1), fills.Load())
	// Without fill, a miss is ErrNotFound.
	_, err = c.Get(ctx, "outputs", "prompt-2", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)

	s := c.Stats()
	require.Equal(t, uint64(2), s.Values.Requests)
	require.Equal(t, uint64(1), s.Values.Hits)
	require.Equal(t, uint64(1), s.Values.Absent, "a lookup that missed is a miss, not a failure")
	require.Equal(t, uint64(1), s.Values.Misses)
	require.Zero(t, s.Values.Failed)
	require.Equal(t, 0.5, s.Values.HitRate)
	require.Equal(t, uint64(1), s.Namespaces["outputs"].Tiers[1].Hits, "the L2 hit")
	require.Zero(t, s.Tensors.Requests, "values are not tensors")

	// The directory keeps every process's measures: the first process's
	// fill and hit, and this one's.
	life := s.LifetimeMeasured
	require.Equal(t, uint64(4), life.Values.Requests)
	ns := life.Namespaces["outputs"]
	require.Equal(t, uint64(4), ns.Requests)
	require.Equal(t, []uint64{1, 1, 0, 1, 0}, []uint64{ns.Tiers[0].Hits, ns.Tiers[1].Hits, ns.Tiers[2].Hits, ns.Tiers[3].Hits, ns.Tiers[4].Hits})
	require.Equal(t, uint64(1), ns.MissLatency.Count, "the fill, timed")
	require.Equal(t, uint64(1), ns.Tiers[1].Latency.Count, "the L2 hit, timed")
	require.Positive(t, ns.Formula)
}

func TestValues_FillErrorsAreNotCached(t *testing.T) {
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	ctx := context.Background()
	boom := errors.New("model server down")
	calls := 0
	fill := func(context.Context) ([]byte, error) {
		calls++
		if calls == 1 {
			return nil, boom
		}
		return []byte("ok"), nil
	}
	_, err := c.Get(ctx, "ns", "k", fill)
	require.ErrorIs(t, err, boom)
	v, err := c.Get(ctx, "ns", "k", fill)
	require.NoError(t, err)
	require.Equal(t, "ok", string(v.Bytes()))
	require.Equal(t, 2, calls)
}

// Sixteen callers of one missing key: one fill runs, the others wait for it
// and share its bytes.
func TestValues_OneFillForConcurrentCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := Open(&Options{Logger: nilLogger()})
		require.NoError(t, err)
		defer c.Close()
		gate := make(chan struct{})
		var fills atomic.Int32
		fill := func(context.Context) ([]byte, error) {
			fills.Add(1)
			<-gate
			return []byte("computed"), nil
		}
		got := make([]*Value, 16)
		var wg sync.WaitGroup
		for i := range got {
			wg.Go(func() {
				v, err := c.Get(context.Background(), "ns", "k", fill)
				require.NoError(t, err)
				got[i] = v
			})
		}
		synctest.Wait()
		require.Equal(t, int32(1), fills.Load())
		close(gate)
		wg.Wait()
		served := map[Tier]int{}
		for _, v := range got {
			served[v.ServedBy]++
			require.Equal(t, "computed", string(v.Bytes()))
		}
		require.Equal(t, map[Tier]int{Fill: 1, Shared: 15}, served)
		s := c.Stats().Values
		require.Equal(t, uint64(16), s.Misses)
		require.Equal(t, uint64(15), s.Shared)
	})
}

func TestValues_PutDeleteAndList(t *testing.T) {
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	ctx := context.Background()
	b := []byte("prepared input")
	require.NoError(t, c.Put(ctx, "inputs", "img-1", b, nil))
	b[0] = 'X' // the cache kept a copy
	require.NoError(t, c.Put(ctx, "inputs", "key\x00with nul", []byte("x"), nil))
	require.NoError(t, c.Put(ctx, "other", "img-1", []byte("y"), nil))
	v, err := c.Get(ctx, "inputs", "img-1", nil)
	require.NoError(t, err)
	require.Equal(t, "prepared input", string(v.Bytes()))

	var listed []string
	require.NoError(t, c.Values("inputs", func(v *CachedValue) bool {
		listed = append(listed, v.Key)
		return true
	}))
	require.ElementsMatch(t, []string{"img-1", "key\x00with nul"}, listed)
	n := 0
	require.NoError(t, c.Values("", func(*CachedValue) bool { n++; return true }))
	require.Equal(t, 3, n)
	// Tensors listings do not see values.
	require.NoError(t, c.Cached(func(*CachedTensor) bool { t.Fatal("a value listed as a tensor"); return false }))

	require.NoError(t, c.Delete(ctx, "inputs", "img-1"))
	_, err = c.Get(ctx, "inputs", "img-1", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)
	v, err = c.Get(ctx, "other", "img-1", nil)
	require.NoError(t, err)
	require.Equal(t, "y", string(v.Bytes()))

	for _, bad := range []string{"", "a\x00b", string(make([]byte, key.MaxNamespace+1))} {
		require.ErrorIs(t, c.Put(ctx, bad, "k", nil, nil), errs.ErrInvalidArgument)
		_, err := c.Get(ctx, bad, "k", nil)
		require.ErrorIs(t, err, errs.ErrInvalidArgument)
	}
	_, err = c.Get(ctx, "inputs", string(make([]byte, key.MaxValueKey+1)), nil)
	require.ErrorIs(t, err, errs.ErrInvalidArgument)
	require.ErrorIs(t, c.Put(ctx, "ns", "k", make([]byte, 10), &PutOptions{DType: "F32", Shape: []uint64{3}}), errs.ErrInvalidArgument)
}

// l2Values counts the L2 entries of namespace ns, of every epoch.
func l2Values(t *testing.T, c *Cache, ns string) int {
	n := 0
	require.NoError(t, c.l2.Range(key.HeadPrefix(key.Value, ns), func(*l2.EntryInfo) bool { n++; return true }))
	return n
}

func TestValues_DropNamespace(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	c, err := Open(&Options{Dir: dir, Logger: nilLogger()})
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, c.Put(ctx, "outputs@v1", fmt.Sprint(i), []byte("old"), nil))
	}
	require.NoError(t, c.Put(ctx, "kept", "k", []byte("kept"), nil))
	require.NoError(t, c.DropNamespace(ctx, "outputs@v1"))
	// Gone at once, from every tier.
	_, err = c.Get(ctx, "outputs@v1", "7", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)
	v, err := c.Get(ctx, "outputs@v1", "7", func(context.Context) ([]byte, error) { return []byte("new"), nil })
	require.NoError(t, err)
	require.Equal(t, Fill, v.ServedBy)
	require.NoError(t, c.Close()) // waits for the background sweep

	c = openCache(t, &Options{Dir: dir, Logger: nilLogger()})
	require.Equal(t, 1, l2Values(t, c, "outputs@v1"), "the old epoch's entries are swept; the new value stays")
	_, err = c.Get(ctx, "outputs@v1", "8", nil)
	require.ErrorIs(t, err, errs.ErrNotFound, "the drop holds across a restart")
	v, err = c.Get(ctx, "outputs@v1", "7", nil)
	require.NoError(t, err)
	require.Equal(t, "new", string(v.Bytes()))
	v, err = c.Get(ctx, "kept", "k", nil)
	require.NoError(t, err)
	require.Equal(t, "kept", string(v.Bytes()))
}

func TestValues_TTL(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	dir := t.TempDir()
	ctx := context.Background()
	c, err := Open(&Options{Dir: dir, Clock: clock, Logger: nilLogger()})
	require.NoError(t, err)
	require.NoError(t, c.SetNamespace("short", NamespaceOptions{TTL: time.Minute}))
	require.NoError(t, c.Put(ctx, "short", "a", []byte("a"), nil))
	require.NoError(t, c.Put(ctx, "short", "b", []byte("b"), &PutOptions{TTL: time.Hour}))
	require.NoError(t, c.Put(ctx, "forever", "c", []byte("c"), nil))
	v, err := c.Get(ctx, "short", "a", nil)
	require.NoError(t, err)
	require.True(t, now.Add(time.Minute).Equal(v.Expires()))
	advance(2 * time.Minute)
	_, err = c.Get(ctx, "short", "a", nil)
	require.ErrorIs(t, err, errs.ErrNotFound, "expired in L1")
	require.NoError(t, c.Close())

	c = openCache(t, &Options{Dir: dir, Clock: clock, Logger: nilLogger()})
	_, err = c.Get(ctx, "short", "a", nil)
	require.ErrorIs(t, err, errs.ErrNotFound, "expired in L2")
	_, err = c.Get(ctx, "short", "b", nil)
	require.NoError(t, err, "the put's own TTL")
	advance(2 * time.Hour)
	_, err = c.Get(ctx, "short", "b", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)
	_, err = c.Get(ctx, "forever", "c", nil)
	require.NoError(t, err)
}

// A namespace held to a share of L1 cannot flush another namespace, nor
// the tensors.
func TestValues_MemoryShare(t *testing.T) {
	c := openCache(t, &Options{MemoryBytes: 1 << 20, Logger: nilLogger()})
	ctx := context.Background()
	require.NoError(t, c.SetNamespace("greedy", NamespaceOptions{MemoryBytes: 64 << 10}))
	for i := range 64 {
		require.NoError(t, c.Put(ctx, "calm", fmt.Sprint(i), make([]byte, 4<<10), nil))
	}
	for i := range 1000 {
		require.NoError(t, c.Put(ctx, "greedy", fmt.Sprint(i), make([]byte, 4<<10), nil))
	}
	for i := range 64 {
		v, err := c.Get(ctx, "calm", fmt.Sprint(i), nil)
		require.NoError(t, err)
		require.Equal(t, L1, v.ServedBy)
	}
	b, _ := c.l1.GroupBytes(key.OwnerOf(key.Value, "greedy"))
	require.LessOrEqual(t, b, int64(64<<10))
	v, err := c.Get(ctx, "greedy", "999", nil)
	require.NoError(t, err, "the newest stay")
	require.Equal(t, L1, v.ServedBy)
}

func TestValues_DiskShare(t *testing.T) {
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	ctx := context.Background()
	const share = 256 << 10
	require.NoError(t, c.SetNamespace("greedy", NamespaceOptions{DiskBytes: share}))
	rnd := rand.New(rand.NewPCG(1, 2))
	noise := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	require.NoError(t, c.Put(ctx, "calm", "k", noise(100<<10), nil))
	for i := range 100 {
		require.NoError(t, c.Put(ctx, "greedy", fmt.Sprint(i), noise(16<<10), nil))
	}
	var stored uint64
	require.NoError(t, c.Values("greedy", func(v *CachedValue) bool { stored += v.StoredBytes; return true }))
	require.LessOrEqual(t, stored, uint64(share))
	require.Greater(t, stored, uint64(share/2))
	_, err := c.Get(ctx, "greedy", "99", nil)
	require.NoError(t, err, "the newest stay")
	require.Equal(t, 1, l2Values(t, c, "calm"))
}

// A value past StreamAbove is written chunk by chunk and read back whole.
func TestValues_Large(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 65 MiB")
	}
	dir := t.TempDir()
	ctx := context.Background()
	b := make([]byte, StreamAbove+1<<20)
	for i := range b {
		b[i] = byte(i * 7 >> 12)
	}
	c, err := Open(&Options{Dir: dir, MemoryBytes: 16 << 20, Logger: nilLogger()})
	require.NoError(t, err)
	require.NoError(t, c.Put(ctx, "big", "k", b, nil))
	require.NoError(t, c.Close())
	c = openCache(t, &Options{Dir: dir, MemoryBytes: 16 << 20, Logger: nilLogger()})
	v, err := c.Get(ctx, "big", "k", nil)
	require.NoError(t, err)
	require.Equal(t, L2, v.ServedBy)
	require.True(t, bytes.Equal(b, v.Bytes()))
}

// A value larger than memory should hold goes in and out a chunk at a time.
func TestValues_PutReaderAndOpenValue(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 65 MiB")
	}
	c := openCache(t, &Options{Dir: t.TempDir(), MemoryBytes: 16 << 20, Logger: nilLogger()})
	ctx := context.Background()
	b := make([]byte, StreamAbove+1<<20)
	for i := range b {
		b[i] = byte(i * 13 >> 10)
	}
	require.NoError(t, c.PutReader(ctx, "big", "k", bytes.NewReader(b), int64(len(b)), nil))
	r, err := c.OpenValue(ctx, "big", "k")
	require.NoError(t, err)
	require.Equal(t, L2, r.ServedBy)
	require.Equal(t, int64(len(b)), r.Size())
	var got bytes.Buffer
	_, err = r.WriteTo(&got)
	require.NoError(t, err)
	require.NoError(t, r.Close())
	require.True(t, bytes.Equal(b, got.Bytes()))
	// A short reader stores nothing; a cancelled one neither.
	require.Error(t, c.PutReader(ctx, "big", "short", bytes.NewReader(b[:10]), 20, nil))
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, c.PutReader(cctx, "big", "cancelled", bytes.NewReader(b), int64(len(b)), nil), context.Canceled)
	for _, k := range []string{"short", "cancelled"} {
		_, err = c.OpenValue(ctx, "big", k)
		require.ErrorIs(t, err, errs.ErrNotFound)
	}
	// From L1.
	require.NoError(t, c.Put(ctx, "small", "k", []byte("abc"), nil))
	r, err = c.OpenValue(ctx, "small", "k")
	require.NoError(t, err)
	require.Equal(t, L1, r.ServedBy)
	p := make([]byte, 2)
	_, err = r.ReadAt(p, 1)
	require.NoError(t, err)
	require.Equal(t, "bc", string(p))
	require.NoError(t, r.Close())
	s := c.Stats().Namespaces["big"]
	require.Equal(t, uint64(1), s.Hits)
	require.Equal(t, uint64(2), s.Absent)
}

// With an encryption key, values are encrypted at rest like every entry:
// the directory's files never hold the plaintext.
func TestValues_EncryptedAtRest(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	secret := bytes.Repeat([]byte("a secret output, in the clear? "), 64)
	key := bytes.Repeat([]byte{7}, 32)
	c, err := Open(&Options{Dir: dir, EncryptionKey: key, Logger: nilLogger()})
	require.NoError(t, err)
	require.NoError(t, c.Put(ctx, "outputs", "k", secret, nil))
	require.NoError(t, c.Close())
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a directory
		}
		require.False(t, bytes.Contains(b, secret[:24]), "plaintext in %s", f)
	}
	c = openCache(t, &Options{Dir: dir, EncryptionKey: key, Logger: nilLogger()})
	v, err := c.Get(ctx, "outputs", "k", nil)
	require.NoError(t, err)
	require.Equal(t, secret, v.Bytes())
}

// A float array said to be one is stored by the float-aware codec: smaller
// than as opaque bytes.
func TestValues_FloatCodec(t *testing.T) {
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger()})
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, 4*64<<10)
	for i := 0; i < len(b); i += 4 {
		binary.LittleEndian.PutUint32(b[i:], math.Float32bits(float32(rnd.NormFloat64()*0.02)))
	}
	require.NoError(t, c.Put(ctx, "acts", "float", b, &PutOptions{DType: "F32", Shape: []uint64{64 << 10}}))
	require.NoError(t, c.Put(ctx, "acts", "opaque", b, nil))
	sizes := map[string]*CachedValue{}
	require.NoError(t, c.Values("acts", func(v *CachedValue) bool { sizes[v.Key] = v; return true }))
	require.Equal(t, "F32", sizes["float"].DType)
	require.Equal(t, []uint64{64 << 10}, sizes["float"].Shape)
	require.Less(t, sizes["float"].StoredBytes, sizes["opaque"].StoredBytes)
	c.l1.DeleteGroup(key.OwnerOf(key.Value, "acts"))
	v, err := c.Get(ctx, "acts", "float", nil)
	require.NoError(t, err)
	require.Equal(t, L2, v.ServedBy)
	require.Equal(t, "F32", v.DType())
	require.Equal(t, b, v.Bytes())
}

// A model's namespace changes with the model's version: the outputs of
// the old file are never served for the new one.
func TestValues_NamespaceForFollowsTheModel(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	writeModel(t, path, 1)
	c := openCache(t, &Options{Logger: nilLogger()})
	ctx := context.Background()
	m, err := c.Model(ctx, path)
	require.NoError(t, err)
	ns1 := NamespaceFor(m, "outputs")
	require.NoError(t, m.Close())
	require.NoError(t, c.Put(ctx, ns1, "x", []byte("old output"), nil))

	time.Sleep(10 * time.Millisecond)
	writeModel(t, path, 2)
	require.NoError(t, os.Chtimes(path, time.Now(), time.Now()))
	m, err = c.Model(ctx, path)
	require.NoError(t, err)
	defer m.Close()
	ns2 := NamespaceFor(m, "outputs")
	require.NotEqual(t, ns1, ns2)
	_, err = c.Get(ctx, ns2, "x", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)
}
