package tier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testredis"
	"github.com/modelcache/modelcache/l3"
	"github.com/modelcache/modelcache/serialize"
)

// Another client of the fleet's Redis, without the fleet key: these tests
// write its records by hand, in l3's format, and check that no reader
// crashes, stalls, serves them, or turns L3 off.

// redisName is the Redis key of l3's record of kind ("m" meta, "l" lease)
// for the entry under key.
func redisName(kind, key string) string {
	h := sha256.Sum256([]byte(key))
	return "mc:" + kind + ":" + hex.EncodeToString(h[:16])
}

// forgeMeta writes a meta, as any client can, announcing an entry of
// length bytes of dtype and shape under key.
func forgeMeta(t *testing.T, rdb *redis.Client, key, dtype string, shape []uint64, length uint64) {
	t.Helper()
	h := &serialize.Header{DType: dtype, Shape: shape, Length: length, ChunkSize: l3.MaxChunk}
	h.Chunks = make([]serialize.ChunkInfo, serialize.NumChunks(length, h.ChunkSize))
	for i := range h.Chunks {
		h.Chunks[i] = serialize.ChunkInfo{Codec: serialize.Raw, StoredLen: uint32(h.ChunkLen(i))}
	}
	b := append([]byte("MCL3"), 1)
	b = append(b, make([]byte, 12)...) // the write's id
	b = binary.LittleEndian.AppendUint64(b, uint64(time.Now().UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b, err := h.AppendBinary(b)
	require.NoError(t, err)
	require.NoError(t, rdb.Set(context.Background(), redisName("m", key), b, 0).Err())
}

func rawRedis(t *testing.T, addr string) *redis.Client {
	rdb := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// syncBuffer is a log's output, read while the cache writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A forged meta announcing 1 TiB, or the tensor's length in another shape,
// is a miss counted corrupt: the reader is served by the source, and
// allocates nothing for it (the old reader died: runtime: out of memory).
func TestFleet_ForgedMetaIsAMiss(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	rdb := rawRedis(t, srv.Addr)
	c := machine(t, srv.Addr, nil)
	m, err := c.Model(ctx, testModel)
	require.NoError(t, err)
	defer m.Close()
	huge, reshaped := &m.tensors[0], &m.tensors[1]
	forge := func() {
		forgeMeta(t, rdb, huge.key, "U8", []uint64{1 << 40}, 1<<40)
		// The same length, in one dimension more.
		forgeMeta(t, rdb, reshaped.key, reshaped.DType, append([]uint64{1}, reshaped.Shape...), reshaped.Bytes)
	}
	forge()
	var into atomic.Int64
	_, err = m.Load(ctx, &LoadOptions{Into: func(ti *TensorInfo) ([]byte, error) {
		into.Add(int64(ti.Bytes))
		return make([]byte, ti.Bytes), nil
	}}, func(tn *Tensor) error {
		if tn.Name == huge.Name || tn.Name == reshaped.Name {
			require.Equal(t, Source, tn.ServedBy, tn.Name)
		}
		require.Equal(t, fileBytes(t, testModel, tn.Name), tn.Bytes(), tn.Name)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, int64(m.Bytes()), into.Load(), "only the tensors' own bytes were asked for")
	require.Equal(t, uint64(2), c.Stats().L3.Corrupt)

	// Cache.Tensor, on a machine whose L2 is empty.
	forge()
	b := machine(t, srv.Addr, nil)
	for _, ti := range []*TensorInfo{huge, reshaped} {
		tn, err := b.Tensor(ctx, testModel, ti.Name)
		require.NoError(t, err)
		require.Equal(t, Source, tn.ServedBy)
		require.Equal(t, fileBytes(t, testModel, ti.Name), tn.Bytes())
	}
	require.Equal(t, uint64(2), b.Stats().L3.Corrupt)
	require.False(t, b.Stats().L3.Down)

	// A value: bounded by MaxValueBytes.
	v := openCache(t, &Options{Logger: nilLogger(), MaxValueBytes: 1 << 20, L3: &l3.Options{Addrs: []string{srv.Addr}}})
	st, err := v.namespace("outputs", "k")
	require.NoError(t, err)
	forgeMeta(t, rdb, st.key("k"), "U8", []uint64{2 << 20}, 2<<20)
	_, err = v.Get(ctx, "outputs", "k", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)
	forgeMeta(t, rdb, st.key("k"), "U8", []uint64{1 << 40}, 1<<40)
	got, err := v.Get(ctx, "outputs", "k", func(context.Context) ([]byte, error) { return []byte("filled"), nil })
	require.NoError(t, err)
	require.Equal(t, Fill, got.ServedBy)
	require.Equal(t, uint64(2), v.Stats().L3.Corrupt)
}

// Leases set by hand, without a TTL or with one longer than the lease
// period, on every tensor of a model: a load is not stalled by them (the
// old one waited 5 minutes for each), it reads the origin once, and counts
// them.
func TestFleet_HandSetLeasesDoNotStall(t *testing.T) {
	srv := testredis.Start(t)
	rdb := rawRedis(t, srv.Addr)
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger(),
		L3: &l3.Options{Addrs: []string{srv.Addr}, LeasePeriod: time.Minute}})
	// Old code: each wait lasted until this ends.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m, err := c.Model(ctx, testModel)
	require.NoError(t, err)
	defer m.Close()
	for i, ti := range m.tensors {
		ttl := time.Duration(0)
		if i%2 == 1 {
			ttl = 24 * time.Hour
		}
		require.NoError(t, rdb.Set(ctx, redisName("l", ti.key), "mine", ttl).Err())
	}
	_, err = m.Load(ctx, nil, func(tn *Tensor) error {
		require.Equal(t, fileBytes(t, testModel, tn.Name), tn.Bytes(), tn.Name)
		return nil
	})
	require.NoError(t, err)
	require.NoError(t, ctx.Err())
	s := c.Stats().L3
	require.Equal(t, uint64(len(m.tensors)), s.Corrupt, "each lease ignored once")
	require.Equal(t, uint64(len(m.tensors)), s.Leases, "and taken over")
}

// A lease another machine seems to hold (within the period, so trusted)
// makes Model.Load wait, but no longer than its context: old code waited
// on the cache's context, for the lease to end.
func TestFleet_LoadWaitEndsWithItsContext(t *testing.T) {
	srv := testredis.Start(t)
	rdb := rawRedis(t, srv.Addr)
	const period = 5 * time.Minute
	c := openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger(),
		L3: &l3.Options{Addrs: []string{srv.Addr}, LeasePeriod: period}})
	m, err := c.Model(context.Background(), testModel)
	require.NoError(t, err)
	defer m.Close()
	held := &m.tensors[3]
	require.NoError(t, rdb.Set(context.Background(), redisName("l", held.key), "another machine", period).Err())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	delivered := 0
	_, err = m.Load(ctx, &LoadOptions{Order: ReadyOrder}, func(*Tensor) error { delivered++; return nil })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// The lease had most of its period left: the load did not wait for it.
	require.Less(t, time.Since(start), period/4)
	require.Less(t, delivered, len(m.tensors))
	// Warm too.
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = m.Warm(ctx, nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), period/4)
	// The lease is still another machine's.
	ttl, err := rdb.PTTL(context.Background(), redisName("l", held.key)).Result()
	require.NoError(t, err)
	require.Positive(t, ttl)
}

// A malformed epoch, or with a fleet key one not sealed with it, is a
// warning: L3 stays up (old code: its breaker opened at every round of the
// epoch follower), and the namespace is not dropped.
func TestFleet_MalformedEpochIsAWarning(t *testing.T) {
	srv := testredis.Start(t)
	rdb := rawRedis(t, srv.Addr)
	ctx := context.Background()
	for _, fleetKey := range [][]byte{nil, bytes.Repeat([]byte{5}, 32)} {
		require.NoError(t, rdb.FlushAll(ctx).Err())
		var log syncBuffer
		open := func() *Cache {
			return openCache(t, &Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&log, nil)),
				L3: &l3.Options{Addrs: []string{srv.Addr}, FleetKey: fleetKey, BreakerFailures: 1, BreakerCooldown: time.Hour}})
		}
		a, b := open(), open()
		require.NoError(t, a.Put(ctx, "outputs", "k", []byte("v"), nil))
		forged := "notanumber"
		if fleetKey != nil {
			forged = "314159265358979" // a number, but not the fleet's (long enough not to appear in a timestamp)
		}
		require.NoError(t, rdb.Set(ctx, "mc:e:outputs", forged, 0).Err())
		v, err := b.Get(ctx, "outputs", "k", nil)
		require.NoError(t, err)
		require.Equal(t, L3, v.ServedBy)
		// Rounds of a's and b's epoch followers read it, each a warning.
		for a.Stats().L3.Corrupt < 1 || b.Stats().L3.Corrupt < 2 {
			require.False(t, a.Stats().L3.Down, "L3 turned off by one record")
			require.False(t, b.Stats().L3.Down, "L3 turned off by one record")
			time.Sleep(50 * time.Millisecond)
		}
		require.False(t, a.Stats().L3.Down)
		require.Contains(t, log.String(), "malformed epoch")
		require.NotContains(t, log.String(), forged, "the record is not echoed")
		// Not dropped; and a drop replaces the record.
		v, err = a.Get(ctx, "outputs", "k", nil)
		require.NoError(t, err)
		require.Equal(t, []byte("v"), v.Bytes())
		require.NoError(t, a.DropNamespace(ctx, "outputs"))
		_, err = b.Get(ctx, "outputs", "k", nil)
		for err == nil {
			time.Sleep(20 * time.Millisecond)
			_, err = b.Get(ctx, "outputs", "k", nil)
		}
		require.ErrorIs(t, err, errs.ErrNotFound)
	}
}

// A value whose keys lost their TTL (PERSIST, by another client) is not
// served past the expiry its writer sealed in its meta.
func TestFleet_ExpiryCheckedAfterPersist(t *testing.T) {
	srv := testredis.Start(t)
	rdb := rawRedis(t, srv.Addr)
	ctx := context.Background()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	open := func() *Cache {
		return openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger(), Clock: clock,
			L3: &l3.Options{Addrs: []string{srv.Addr}}})
	}
	a := open()
	require.NoError(t, a.Put(ctx, "outputs", "k", []byte("v"), &PutOptions{TTL: time.Hour}))
	keys, err := rdb.Keys(ctx, "mc:[mc]:*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	for _, k := range keys {
		require.NoError(t, rdb.Persist(ctx, k).Err())
	}
	v, err := open().Get(ctx, "outputs", "k", nil)
	require.NoError(t, err)
	require.Equal(t, L3, v.ServedBy)
	now.Add(int64(2 * time.Hour))
	_, err = open().Get(ctx, "outputs", "k", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)
}

// LoadOptions.Into is asked once per tensor, also for a tensor whose L3
// entry turns out damaged (old code asked again for the source's read).
func TestFleet_IntoOncePerTensor(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	rdb := rawRedis(t, srv.Addr)
	a := machine(t, srv.Addr, nil)
	m, err := a.Model(ctx, testModel)
	require.NoError(t, err)
	_, err = m.Load(ctx, nil, func(*Tensor) error { return nil })
	require.NoError(t, err)
	m.Close()
	a.Flush()
	// Damage one chunk of every tensor's entry.
	keys, err := rdb.Keys(ctx, "mc:c:*").Result()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	for _, k := range keys {
		raw, err := rdb.Get(ctx, k).Bytes()
		require.NoError(t, err)
		raw[len(raw)/2] ^= 0x10
		require.NoError(t, rdb.Set(ctx, k, raw, 0).Err())
	}
	b := machine(t, srv.Addr, nil)
	m, err = b.Model(ctx, testModel)
	require.NoError(t, err)
	defer m.Close()
	var mu sync.Mutex
	calls := map[string]int{}
	_, err = m.Load(ctx, &LoadOptions{Into: func(ti *TensorInfo) ([]byte, error) {
		mu.Lock()
		calls[ti.Name]++
		mu.Unlock()
		return make([]byte, ti.Bytes), nil
	}}, func(tn *Tensor) error {
		require.Equal(t, fileBytes(t, testModel, tn.Name), tn.Bytes(), tn.Name)
		return nil
	})
	require.NoError(t, err)
	require.Positive(t, b.Stats().L3.Corrupt)
	require.Len(t, calls, len(m.tensors))
	for name, n := range calls {
		require.Equal(t, 1, n, "Into called %d times for %s", n, strings.ToValidUTF8(name, "?"))
	}
}
