package l3

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testredis"
	"github.com/modelcache/modelcache/serialize"
)

// forgedMeta is a meta, as a client without the fleet key can write it,
// announcing an entry of length bytes in chunks of chunk bytes.
func forgedMeta(t *testing.T, key, dtype string, shape []uint64, length uint64, chunk uint32) []byte {
	t.Helper()
	h := &serialize.Header{DType: dtype, Shape: shape, Length: length, ChunkSize: chunk}
	h.Chunks = make([]serialize.ChunkInfo, serialize.NumChunks(length, chunk))
	for i := range h.Chunks {
		h.Chunks[i] = serialize.ChunkInfo{Codec: serialize.Raw, StoredLen: uint32(h.ChunkLen(i))}
	}
	b := append([]byte(metaMagic), 1)
	b = append(b, make([]byte, idLen)...)
	b = binary.LittleEndian.AppendUint64(b, 1)
	b = binary.LittleEndian.AppendUint64(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b, err := h.AppendBinary(b)
	require.NoError(t, err)
	return b
}

// A forged meta announcing a huge entry, or another shape than expected,
// is a corrupt miss before anything is allocated for it; the breaker does
// not count it.
func TestStore_ForgedMetaAllocatesNothing(t *testing.T) {
	srv := testredis.Start(t)
	s := open(t, &Options{Addrs: []string{srv.Addr}, BreakerFailures: 1})
	ctx := context.Background()
	name := s.metaKey(s.hash("k"))
	forge := func(dtype string, shape []uint64, length uint64) {
		require.NoError(t, s.Client().Set(ctx, name, forgedMeta(t, "k", dtype, shape, length, MaxChunk), 0).Err())
	}
	called := 0
	alloc := func(string, []uint64, uint64) ([]byte, error) { called++; return nil, nil }
	want := &Expect{Exact: true, DType: "F32", Shape: []uint64{2, 2}, Length: 16}

	// 1 TiB (the old reader made it: fatal error: runtime: out of memory).
	forge("U8", []uint64{1 << 40}, 1<<40)
	_, err := s.GetInto(ctx, "k", want, alloc)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	forge("U8", []uint64{1 << 40}, 1<<40)
	_, err = s.Get(ctx, "k") // no expectation: DefaultMaxLength
	require.ErrorIs(t, err, errs.ErrCorrupt)
	forge("U8", []uint64{1 << 40}, 1<<40)
	_, err = s.GetInto(ctx, "k", &Expect{MaxLength: 1 << 20}, alloc)
	require.ErrorIs(t, err, errs.ErrCorrupt)

	// The right length, another shape or dtype.
	forge("F32", []uint64{4}, 16)
	_, err = s.GetInto(ctx, "k", want, alloc)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	forge("I32", []uint64{2, 2}, 16)
	_, err = s.GetInto(ctx, "k", want, alloc)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	// A shape that does not say its length.
	forge("F32", []uint64{2, 2}, 12)
	_, err = s.GetInto(ctx, "k", nil, alloc)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	require.Zero(t, called, "nothing allocated")
	has, err := s.Has(ctx, "k")
	require.NoError(t, err)
	require.False(t, has, "a forged meta is dropped")

	// A meta longer than any the expected entry can have is not read
	// whole.
	require.NoError(t, s.Client().Set(ctx, name, bytes.Repeat([]byte("x"), 1<<20), 0).Err())
	_, err = s.GetInto(ctx, "k", want, alloc)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	// Another type under a meta's name: corrupt, not a Redis failure.
	require.NoError(t, s.Client().RPush(ctx, name, "x").Err())
	_, err = s.Get(ctx, "k")
	require.ErrorIs(t, err, errs.ErrCorrupt)
	require.False(t, s.Down())

	// A chunk longer than its meta says is not read whole either.
	require.NoError(t, s.Put(ctx, "real", "F32", []uint64{2, 2}, make([]byte, 16), 0))
	keys, err := s.Client().Keys(ctx, "mc:c:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	require.NoError(t, s.Client().Set(ctx, keys[0], bytes.Repeat([]byte("x"), 1<<20), 0).Err())
	_, err = s.GetInto(ctx, "real", want, nil)
	require.ErrorIs(t, err, errs.ErrCorrupt)
	require.False(t, s.Down())

	// Writers refuse what readers would drop.
	require.ErrorIs(t, s.Put(ctx, "bad", "F32", []uint64{3}, make([]byte, 3), 0), errs.ErrInvalidArgument)
}

// Leases no holder can have set are not waited for: without a TTL, with
// one past the lease period, and, with a fleet key, not sealed or not
// renewed for a period. Each is deleted, and the waiter takes over.
func TestStore_UntrustedLeasesDoNotStall(t *testing.T) {
	srv := testredis.Start(t)
	period := 300 * time.Millisecond
	s := open(t, &Options{Addrs: []string{srv.Addr}, LeasePeriod: period})
	// Old code waited until the lease went away: here, until this ends.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lease := s.leaseKey(s.hash("k"))
	for _, ttl := range []time.Duration{0, time.Hour} {
		require.NoError(t, s.Client().Set(ctx, lease, "by hand", ttl).Err())
		got, err := s.Await(ctx, "k")
		require.ErrorIs(t, err, errs.ErrCorrupt, "ttl %v", ttl)
		require.False(t, got)
		require.NoError(t, ctx.Err())
		l, ok, err := s.Lease(ctx, "k")
		require.NoError(t, err)
		require.True(t, ok, "deleted: the waiter takes it")
		l.Release()
	}

	// A lease set by hand within the period, without a fleet key, is a
	// holder's as far as anyone can tell: it ends within the period.
	require.NoError(t, s.Client().Set(ctx, lease, "by hand", period).Err())
	got, err := s.Await(ctx, "k")
	require.NoError(t, err)
	require.False(t, got)

	// With a fleet key: a value without the seal, or a holder's value
	// copied back after its holder let go, once its period is over.
	fk := bytes.Repeat([]byte{7}, 32)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	a := open(t, &Options{Addrs: []string{srv.Addr}, FleetKey: fk, LeasePeriod: period, Clock: clock, Prefix: "f:"})
	lease = a.leaseKey(a.hash("k"))
	require.NoError(t, a.Client().Set(ctx, lease, "forged", period).Err())
	_, err = a.Await(ctx, "k")
	require.ErrorIs(t, err, errs.ErrCorrupt)

	l, ok, err := a.Lease(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)
	held, err := a.Client().Get(ctx, lease).Bytes()
	require.NoError(t, err)
	l.Release()
	require.NoError(t, a.Client().Set(ctx, lease, held, period).Err())
	now.Add(int64(2 * period))
	_, err = a.Await(ctx, "k")
	require.ErrorIs(t, err, errs.ErrCorrupt, "a copy outlives its holder's last renewal by at most a period")

	// A holder's own lease, renewed, is waited for.
	l, ok, err = a.Lease(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)
	done := make(chan error, 1)
	go func() {
		got, err := a.Await(ctx, "k")
		if err == nil && !got {
			err = errs.ErrNotFound
		}
		done <- err
	}()
	require.NoError(t, a.Put(ctx, "k", "", nil, []byte("v"), 0))
	l.Release()
	require.NoError(t, <-done)
}

// A malformed epoch record is an error of that record, not of Redis: it
// never opens the breaker. With a fleet key, an epoch not sealed with it
// is malformed, and a raise replaces it.
func TestStore_MalformedEpochs(t *testing.T) {
	srv := testredis.Start(t)
	s := open(t, &Options{Addrs: []string{srv.Addr}, BreakerFailures: 2})
	ctx := context.Background()
	require.NoError(t, s.Client().Set(ctx, "mc:e:ns", "notanumber", 0).Err())
	for range 5 {
		_, err := s.Epoch(ctx, "ns")
		require.ErrorIs(t, err, errs.ErrCorrupt)
	}
	require.False(t, s.Down(), "old code: the breaker opened")
	e, err := s.RaiseEpoch(ctx, "ns", 4)
	require.NoError(t, err)
	require.Equal(t, uint64(4), e, "a malformed record is replaced")
	e, err = s.Epoch(ctx, "ns")
	require.NoError(t, err)
	require.Equal(t, uint64(4), e)
	// Too long to be read, and still replaced.
	require.NoError(t, s.Client().Set(ctx, "mc:e:ns", strings.Repeat("9", 1<<16), 0).Err())
	_, err = s.Epoch(ctx, "ns")
	require.ErrorIs(t, err, errs.ErrCorrupt)
	e, err = s.RaiseEpoch(ctx, "ns", 5)
	require.NoError(t, err)
	require.Equal(t, uint64(5), e)
	// Near the top of uint64, where the next drop's +1 would wrap to 0:
	// malformed, and replaced.
	require.NoError(t, s.Client().Set(ctx, "mc:e:ns", "18446744073709551615", 0).Err())
	_, err = s.Epoch(ctx, "ns")
	require.ErrorIs(t, err, errs.ErrCorrupt)
	e, err = s.RaiseEpoch(ctx, "ns", 6)
	require.NoError(t, err)
	require.Equal(t, uint64(6), e)

	sealed := open(t, &Options{Addrs: []string{srv.Addr}, FleetKey: bytes.Repeat([]byte{3}, 16), Prefix: "f:"})
	e, err = sealed.RaiseEpoch(ctx, "ns", 2)
	require.NoError(t, err)
	require.Equal(t, uint64(2), e)
	raw, err := sealed.Client().Get(ctx, "f:e:ns").Result()
	require.NoError(t, err)
	require.NotEqual(t, "2", raw, "sealed")
	e, err = sealed.Epoch(ctx, "ns")
	require.NoError(t, err)
	require.Equal(t, uint64(2), e)
	// Forged: a plain number, or a sealed one moved from another namespace.
	require.NoError(t, sealed.Client().Set(ctx, "f:e:ns", "99", 0).Err())
	_, err = sealed.Epoch(ctx, "ns")
	require.ErrorIs(t, err, errs.ErrCorrupt)
	_, err = sealed.RaiseEpoch(ctx, "other", 7)
	require.NoError(t, err)
	moved, err := sealed.Client().Get(ctx, "f:e:other").Result()
	require.NoError(t, err)
	require.NoError(t, sealed.Client().Set(ctx, "f:e:ns", moved, 0).Err())
	_, err = sealed.Epoch(ctx, "ns")
	require.ErrorIs(t, err, errs.ErrCorrupt)
	e, err = sealed.RaiseEpoch(ctx, "ns", 3)
	require.NoError(t, err)
	require.Equal(t, uint64(3), e)
}

// An entry past its writer's expiry is a miss even when another client
// removed its keys' TTL.
func TestStore_ExpiryCheckedAtEveryHit(t *testing.T) {
	srv := testredis.Start(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	s := open(t, &Options{Addrs: []string{srv.Addr}, Clock: clock})
	ctx := context.Background()
	require.NoError(t, s.Put(ctx, "k", "", nil, []byte("v"), time.Hour))
	keys, err := s.Client().Keys(ctx, "mc:*").Result()
	require.NoError(t, err)
	for _, k := range keys {
		require.NoError(t, s.Client().Persist(ctx, k).Err())
	}
	v, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, []byte("v"), v.Data)
	now.Add(int64(2 * time.Hour))
	_, err = s.Get(ctx, "k")
	require.ErrorIs(t, err, errs.ErrNotFound)
	has, err := s.Has(ctx, "k")
	require.NoError(t, err)
	require.False(t, has, "the expired meta is dropped")
}

// A holder's sealed lease, renewed, is trusted for as long as it is
// renewed: its waiter neither takes over nor drops it.
func TestStore_SealedLeaseRenewed(t *testing.T) {
	srv := testredis.Start(t)
	period := 600 * time.Millisecond
	o := &Options{Addrs: []string{srv.Addr}, FleetKey: bytes.Repeat([]byte{7}, 32), LeasePeriod: period}
	holder, waiter := open(t, o), open(t, o)
	ctx := context.Background()
	l, ok, err := holder.Lease(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)
	done := make(chan error, 1)
	go func() {
		got, err := waiter.Await(ctx, "k")
		if err == nil && !got {
			err = errs.ErrNotFound
		}
		done <- err
	}()
	time.Sleep(5 * period / 2) // renewed about 7 times
	select {
	case err := <-done:
		t.Fatalf("the waiter stopped waiting for a renewed lease: %v", err)
	default:
	}
	require.NoError(t, holder.Put(ctx, "k", "", nil, []byte("v"), 0))
	l.Release()
	require.NoError(t, <-done)
	n, err := holder.Client().Exists(ctx, holder.leaseKey(holder.hash("k"))).Result()
	require.NoError(t, err)
	require.Zero(t, n, "released")
}
