package l3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testredis"
)

func open(t *testing.T, o *Options) *Store {
	t.Helper()
	s, err := Open(o)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// noise is n bytes that compress a little, as weights do.
func noise(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.NormFloat64() * 20)
	}
	return b
}

func TestStore_RoundTripSingleNode(t *testing.T) {
	srv := testredis.Start(t)
	s := open(t, &Options{Addrs: []string{srv.Addr}, ChunkSize: 1 << 20})
	ctx := context.Background()
	_, err := s.Get(ctx, "k")
	require.ErrorIs(t, err, errs.ErrNotFound)
	for _, n := range []int{0, 1, 1 << 20, 5<<20 + 3} {
		key := fmt.Sprintf("/m/model.safetensors\x001:2:3:4:5\x00t%d", n)
		data := noise(n, uint64(n))
		require.NoError(t, s.Put(ctx, key, "U8", []uint64{uint64(n)}, data, time.Hour))
		v, err := s.Get(ctx, key)
		require.NoError(t, err)
		require.True(t, bytes.Equal(data, v.Data), "n=%d", n)
		require.Equal(t, "U8", v.DType)
		require.Equal(t, []uint64{uint64(n)}, v.Shape)
	}
	// Every key has the entry's TTL; chunks are at most 1 MiB here.
	keys, err := s.Client().Keys(ctx, "mc:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 4+0+1+1+6)
	for _, k := range keys {
		ttl, err := s.Client().PTTL(ctx, k).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, 59*time.Minute, k)
		n, err := s.Client().StrLen(ctx, k).Result()
		require.NoError(t, err)
		require.LessOrEqual(t, n, int64(1<<20+64), k)
	}
}

// A chunk gone (Redis evicted it) is a miss; a chunk overwritten by
// another client is detected and the entry dropped.
func TestStore_MissingAndOverwrittenChunks(t *testing.T) {
	srv := testredis.Start(t)
	s := open(t, &Options{Addrs: []string{srv.Addr}, ChunkSize: 1 << 20})
	ctx := context.Background()
	data := noise(3<<20, 1)
	chunks := func() []string {
		keys, err := s.Client().Keys(ctx, "mc:c:*").Result()
		require.NoError(t, err)
		return keys
	}
	require.NoError(t, s.Put(ctx, "a", "", nil, data, 0))
	require.NoError(t, s.Client().Del(ctx, chunks()[1]).Err())
	_, err := s.Get(ctx, "a")
	require.ErrorIs(t, err, errs.ErrNotFound)

	require.NoError(t, s.Client().FlushAll(ctx).Err())
	require.NoError(t, s.Put(ctx, "b", "", nil, data, 0))
	c := chunks()[2]
	raw, err := s.Client().Get(ctx, c).Bytes()
	require.NoError(t, err)
	raw[len(raw)/2] ^= 1
	require.NoError(t, s.Client().Set(ctx, c, raw, 0).Err())
	_, err = s.Get(ctx, "b")
	require.ErrorIs(t, err, errs.ErrCorrupt)
	has, err := s.Has(ctx, "b")
	require.NoError(t, err)
	require.False(t, has, "a damaged entry is dropped")
}

// With a fleet key, nothing is stored in the clear, and a value swapped
// for another (even one sealed with the key, under another name) or forged
// is detected.
func TestStore_FleetKey(t *testing.T) {
	srv := testredis.Start(t)
	key := bytes.Repeat([]byte{9}, 32)
	s := open(t, &Options{Addrs: []string{srv.Addr}, FleetKey: key, ChunkSize: 1 << 20})
	ctx := context.Background()
	secret := bytes.Repeat([]byte("weights of a private model. "), 1<<15)
	require.NoError(t, s.Put(ctx, "private", "", nil, secret, 0))
	require.NoError(t, s.Put(ctx, "other", "", nil, noise(len(secret), 2), 0))
	keys, err := s.Client().Keys(ctx, "mc:*").Result()
	require.NoError(t, err)
	for _, k := range keys {
		raw, err := s.Client().Get(ctx, k).Bytes()
		require.NoError(t, err)
		require.False(t, bytes.Contains(raw, secret[:20]), k)
		require.False(t, bytes.Contains(raw, []byte("private")), "the key name is sealed too: %s", k)
	}
	v, err := s.Get(ctx, "private")
	require.NoError(t, err)
	require.Equal(t, secret, v.Data)

	// Another reader without the key, or with another, gets nothing.
	other := open(t, &Options{Addrs: []string{srv.Addr}, FleetKey: bytes.Repeat([]byte{8}, 32)})
	_, err = other.Get(ctx, "other")
	require.ErrorIs(t, err, errs.ErrCorrupt)

	// Swap the metas of two entries: each authenticates under its own
	// name only.
	require.NoError(t, s.Put(ctx, "x", "", nil, []byte("xx"), 0))
	require.NoError(t, s.Put(ctx, "y", "", nil, []byte("yy"), 0))
	mx, my := s.metaKey(s.hash("x")), s.metaKey(s.hash("y"))
	rx, _ := s.Client().Get(ctx, mx).Bytes()
	ry, _ := s.Client().Get(ctx, my).Bytes()
	require.NoError(t, s.Client().Set(ctx, mx, ry, 0).Err())
	require.NoError(t, s.Client().Set(ctx, my, rx, 0).Err())
	for _, k := range []string{"x", "y"} {
		_, err := s.Get(ctx, k)
		require.ErrorIs(t, err, errs.ErrCorrupt, k)
	}
	// Without the key, a meta swapped between keys is caught by the key
	// it names.
	plain := open(t, &Options{Addrs: []string{srv.Addr}, Prefix: "p:"})
	require.NoError(t, plain.Put(ctx, "x", "", nil, []byte("xx"), 0))
	require.NoError(t, plain.Put(ctx, "y", "", nil, []byte("yy"), 0))
	mx, my = plain.metaKey(plain.hash("x")), plain.metaKey(plain.hash("y"))
	ry, _ = plain.Client().Get(ctx, my).Bytes()
	require.NoError(t, plain.Client().Set(ctx, mx, ry, 0).Err())
	_, err = plain.Get(ctx, "x")
	require.ErrorIs(t, err, errs.ErrCorrupt)
}

// One lease holder at a time; the others wait for the entry, or take over
// when the holder lets go without writing it.
func TestStore_LeaseAndAwait(t *testing.T) {
	srv := testredis.Start(t)
	s := open(t, &Options{Addrs: []string{srv.Addr}})
	ctx := context.Background()
	l, ok, err := s.Lease(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)
	_, ok, err = s.Lease(ctx, "k")
	require.NoError(t, err)
	require.False(t, ok)

	done := make(chan bool)
	go func() {
		got, err := s.Await(ctx, "k")
		require.NoError(t, err)
		done <- got
	}()
	require.NoError(t, s.Put(ctx, "k", "", nil, []byte("v"), 0))
	l.Release()
	require.True(t, <-done)

	// A holder that gives up without writing frees the waiters.
	l, ok, err = s.Lease(ctx, "k2")
	require.NoError(t, err)
	require.True(t, ok)
	go func() {
		got, err := s.Await(ctx, "k2")
		require.NoError(t, err)
		done <- got
	}()
	time.Sleep(50 * time.Millisecond)
	l.Release()
	require.False(t, <-done)
	l.Release() // twice is fine

	// Many machines racing for one lease: exactly one wins.
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			l, ok, err := s.Lease(ctx, "race")
			require.NoError(t, err)
			if ok {
				wins.Add(1)
				defer l.Release()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int32(1), wins.Load())
}

func TestStore_Epochs(t *testing.T) {
	srv := testredis.Start(t)
	s := open(t, &Options{Addrs: []string{srv.Addr}})
	ctx := context.Background()
	e, err := s.Epoch(ctx, "ns")
	require.NoError(t, err)
	require.Zero(t, e)
	e, err = s.RaiseEpoch(ctx, "ns", 3)
	require.NoError(t, err)
	require.Equal(t, uint64(3), e)
	e, err = s.RaiseEpoch(ctx, "ns", 2)
	require.NoError(t, err)
	require.Equal(t, uint64(3), e, "never lowered")
}

// Redis down: operations fail fast with ErrUnavailable once the breaker
// opens, and the store recovers by itself when Redis is back.
func TestStore_DownThenBack(t *testing.T) {
	srv := testredis.Start(t)
	addr := srv.Addr
	srv.Kill()
	s := open(t, &Options{Addrs: []string{addr}, Timeout: 200 * time.Millisecond, BreakerCooldown: 100 * time.Millisecond})
	ctx := context.Background()
	for range 5 {
		_, err := s.Get(ctx, "k")
		require.ErrorIs(t, err, ErrUnavailable)
	}
	require.True(t, s.Down())
	start := time.Now()
	_, err := s.Get(ctx, "k")
	require.ErrorIs(t, err, ErrUnavailable)
	require.Less(t, time.Since(start), 50*time.Millisecond, "an open breaker answers at once")

	srv.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = s.Put(ctx, "k", "", nil, []byte("v"), 0)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.NoError(t, err)
	require.False(t, s.Down())
}

// A node that stops answering (SIGSTOP) costs each operation its timeout
// at most, then nothing while the breaker is open.
func TestStore_SlowNode(t *testing.T) {
	srv := testredis.Start(t)
	s := open(t, &Options{Addrs: []string{srv.Addr}, Timeout: 150 * time.Millisecond})
	ctx := context.Background()
	require.NoError(t, s.Put(ctx, "k", "", nil, []byte("v"), 0))
	srv.Stop()
	defer srv.Cont()
	start := time.Now()
	for range 20 {
		_, err := s.Get(ctx, "k")
		require.Error(t, err)
	}
	// Five timeouts open the breaker; the other fifteen cost nothing. Each
	// timeout may be retried (MaxRetries 2): 5 × 3 × 150 ms at most.
	require.Less(t, time.Since(start), 5*3*150*time.Millisecond+time.Second)
	require.True(t, s.Down())
}

// Redis evicting keys under maxmemory: reads miss, never fail, and never
// return wrong bytes.
func TestStore_EvictionUnderMaxmemory(t *testing.T) {
	srv := testredis.Start(t, "maxmemory 8mb", "maxmemory-policy allkeys-lru")
	s := open(t, &Options{Addrs: []string{srv.Addr}, ChunkSize: 256 << 10})
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 40 {
		k := fmt.Sprint("e", i)
		want[k] = noise(1<<20, uint64(i))
		err := s.Put(ctx, k, "", nil, want[k], 0)
		if err != nil {
			require.True(t, strings.Contains(err.Error(), "OOM"), err)
		}
	}
	hits, misses := 0, 0
	for k, b := range want {
		v, err := s.Get(ctx, k)
		switch {
		case err == nil:
			hits++
			require.Equal(t, b, v.Data)
		case errors.Is(err, errs.ErrNotFound):
			misses++
		default:
			t.Fatalf("%s: %v", k, err)
		}
	}
	require.Positive(t, hits)
	require.Positive(t, misses)
}

// A 3-master cluster: an entry's chunks spread over every master; reads
// go on while slots move (MOVED/ASK) and after a master dies and its
// replica takes over.
func TestStore_Cluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six redis-server processes")
	}
	cl := testredis.StartCluster(t, 3, 1)
	s := open(t, &Options{Addrs: cl.Addrs(), ChunkSize: 256 << 10, Timeout: 500 * time.Millisecond, BreakerFailures: 1000})
	ctx := context.Background()
	data := noise(8<<20, 7)
	require.NoError(t, s.Put(ctx, "model/t", "F32", nil, data, 0))
	for _, m := range cl.Masters {
		n, err := m.CLI("dbsize")
		require.NoError(t, err)
		require.NotEqual(t, "0", strings.TrimSpace(n), "chunks on every master")
	}

	// Move slots holding chunks while reading.
	stop := make(chan struct{})
	var readErr atomic.Value
	var reads atomic.Int32
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			v, err := s.Get(ctx, "model/t")
			if err != nil {
				readErr.Store(err)
				return
			}
			if !bytes.Equal(v.Data, data) {
				readErr.Store(errors.New("wrong bytes"))
				return
			}
			reads.Add(1)
		}
	})
	// A third of master 0's slots (with their keys) move to master 1;
	// every master keeps some, so that all three still vote in a failover.
	out, err := cl.Masters[0].CLI("--cluster", "reshard", cl.Masters[0].Addr,
		"--cluster-from", nodeID(t, cl.Masters[0]), "--cluster-to", nodeID(t, cl.Masters[1]),
		"--cluster-slots", "2000", "--cluster-yes")
	require.NoError(t, err, out)
	close(stop)
	wg.Wait()
	require.Nil(t, readErr.Load())
	require.Positive(t, reads.Load())

	// Kill a master: its replica takes over, reads resume.
	var victim *testredis.Server
	for _, m := range cl.Masters[1:] {
		if n, _ := m.CLI("dbsize"); strings.TrimSpace(n) != "0" && m.Replicas() > 0 {
			victim = m
			break
		}
	}
	require.NotNil(t, victim)
	cl.WaitReplicated(t)
	victim.Kill()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := s.Get(ctx, "model/t")
		if err == nil {
			require.Equal(t, data, v.Data)
			break
		}
		require.False(t, time.Now().After(deadline), "reads did not resume after failover: %v", err)
		time.Sleep(200 * time.Millisecond)
	}
}

func nodeID(t *testing.T, s *testredis.Server) string {
	out, err := s.CLI("cluster", "myid")
	require.NoError(t, err)
	return strings.TrimSpace(out)
}

// An ACL user with a password from a file: the right one connects, a
// wrong one is refused (never served, never a hang).
func TestStore_ACLUser(t *testing.T) {
	srv := testredis.Start(t, "user default off", "user fleet on >s3cret ~* &* +@all")
	pw := t.TempDir() + "/password"
	require.NoError(t, os.WriteFile(pw, []byte("s3cret\n"), 0o600))
	s := open(t, &Options{Addrs: []string{srv.Addr}, Username: "fleet", PasswordFile: pw})
	ctx := context.Background()
	require.NoError(t, s.Put(ctx, "k", "", nil, []byte("v"), 0))
	v, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v.Data))

	require.NoError(t, os.WriteFile(pw, []byte("wrong"), 0o600))
	bad := open(t, &Options{Addrs: []string{srv.Addr}, Username: "fleet", PasswordFile: pw, Timeout: 300 * time.Millisecond})
	_, err = bad.Get(ctx, "k")
	require.ErrorIs(t, err, ErrUnavailable)
	require.Contains(t, err.Error(), "WRONGPASS")
}

// TLS with the CA that signed the server: connects; with the system's
// CAs (which did not sign it): refused.
func TestStore_TLS(t *testing.T) {
	ca, cert, key := testredis.Certs(t)
	srv := testredis.StartTLS(t, cert, key, ca)
	ctx := context.Background()
	s := open(t, &Options{Addrs: []string{srv.Addr}, TLSCAFile: ca})
	require.NoError(t, s.Put(ctx, "k", "", nil, []byte("over tls"), 0))
	v, err := s.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "over tls", string(v.Data))

	untrusted := open(t, &Options{Addrs: []string{srv.Addr}, TLS: true, Timeout: 300 * time.Millisecond})
	_, err = untrusted.Get(ctx, "k")
	require.ErrorIs(t, err, ErrUnavailable, "the handshake fails until the timeout")
}

// A probe whose caller gives up does not leave the breaker open for good:
// the next operation probes again.
func TestStore_BreakerProbeGivenUp(t *testing.T) {
	srv := testredis.Start(t)
	s := open(t, &Options{Addrs: []string{srv.Addr}, Timeout: 200 * time.Millisecond, BreakerFailures: 1, BreakerCooldown: 50 * time.Millisecond})
	ctx := context.Background()
	srv.Kill()
	_, err := s.Get(ctx, "k")
	require.ErrorIs(t, err, ErrUnavailable)
	require.True(t, s.Down())
	srv.Restart()
	time.Sleep(100 * time.Millisecond) // past the cool-down: the next operation probes
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.Get(cancelled, "k")
	require.ErrorIs(t, err, context.Canceled)
	_, err = s.Get(ctx, "k")
	require.ErrorIs(t, err, errs.ErrNotFound, "probed, and Redis answered")
	require.False(t, s.Down())
}
