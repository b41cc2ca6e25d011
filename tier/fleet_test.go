package tier

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testredis"
	"github.com/modelcache/modelcache/l3"
	"github.com/modelcache/modelcache/loader"
)

// countingOrigin is the local file system counting tensor bytes read, as
// an origin that bills for traffic would.
type countingOrigin struct {
	LocalFiles
	bytes *atomic.Int64
	delay time.Duration
}

func (o countingOrigin) Open(path string) (ModelFile, error) {
	f, err := o.LocalFiles.Open(path)
	if err != nil {
		return nil, err
	}
	return &countingFile{ModelFile: f, o: o}, nil
}

type countingFile struct {
	ModelFile
	o countingOrigin
}

func (f *countingFile) ReadTensorInto(name string, dst []byte) error {
	time.Sleep(f.o.delay)
	f.o.bytes.Add(int64(len(dst)))
	return f.ModelFile.ReadTensorInto(name, dst)
}

// machine is one machine of a fleet: its own L2 directory, the shared
// Redis, its own view of the origin.
func machine(t *testing.T, redis string, origin Origin) *Cache {
	t.Helper()
	return openCache(t, &Options{Dir: t.TempDir(), Origin: origin, Logger: nilLogger(),
		L3: &l3.Options{Addrs: []string{redis}, BreakerCooldown: 200 * time.Millisecond}})
}

func TestFleet_L3ServesOtherMachines(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	want := fileBytes(t, testModel, "Const_59")
	a := machine(t, srv.Addr, nil)
	b := machine(t, srv.Addr, nil)
	tn, err := a.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	a.Flush()

	tn, err = b.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	require.Equal(t, L3, tn.ServedBy)
	require.Equal(t, want, tn.Bytes())
	tn, err = b.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	require.Equal(t, L1, tn.ServedBy)
	s := b.Stats()
	require.Equal(t, uint64(1), s.Tensors.Tiers[2].Hits, "one L3 hit")
	require.True(t, s.L3.Enabled)
	require.Zero(t, s.L3.Errors)
	col := NewCollector(b)
	problems, err := testutil.CollectAndLint(col)
	require.NoError(t, err)
	require.Empty(t, problems)
	require.Equal(t, 1.0, testutil.ToFloat64(prometheusOnly(col, "modelcache_l3_up")))
	b.Flush()
	// b promoted it to its own L2.
	n, _, _, err := b.FileEntries(testModel)
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

// Four machines miss one model at once: the origin is read about once,
// not four times, and every machine gets the file's bytes.
func TestFleet_OriginReadOncePerFleet(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	var originBytes atomic.Int64
	origin := countingOrigin{bytes: &originBytes, delay: 5 * time.Millisecond}
	var machines []*Cache
	for range 4 {
		machines = append(machines, machine(t, srv.Addr, origin))
	}
	m0, err := machines[0].Model(ctx, testModel)
	require.NoError(t, err)
	total := int64(m0.Bytes())
	m0.Close()
	var wg sync.WaitGroup
	for _, c := range machines {
		wg.Go(func() {
			m, err := c.Model(ctx, testModel)
			require.NoError(t, err)
			defer m.Close()
			_, err = m.Load(ctx, nil, func(tn *Tensor) error {
				if !bytesEqual(tn.Bytes(), fileBytes(t, testModel, tn.Name)) {
					return fmt.Errorf("%s: wrong bytes from %s", tn.Name, tn.ServedBy)
				}
				return nil
			})
			require.NoError(t, err)
		})
	}
	wg.Wait()
	require.LessOrEqual(t, originBytes.Load(), total*11/10, "origin read %d bytes for a %d-byte model", originBytes.Load(), total)
	var leases, fromL3 uint64
	for _, c := range machines {
		s := c.Stats()
		leases += s.L3.Leases
		fromL3 += s.Tensors.Tiers[2].Hits
	}
	require.Positive(t, fromL3, "machines read what others read from the origin")
	require.LessOrEqual(t, leases, uint64(62)*11/10, "about one lease per tensor")
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// Redis down at start: the cache works without L3, and uses it once it
// is up.
func TestFleet_RedisDownAtStart(t *testing.T) {
	srv := testredis.Start(t)
	srv.Kill()
	ctx := context.Background()
	c := machine(t, srv.Addr, nil)
	want := fileBytes(t, testModel, "Const_59")
	for range 3 {
		tn, err := c.Tensor(ctx, testModel, "Const_61")
		require.NoError(t, err)
		require.NotEqual(t, L3, tn.ServedBy)
	}
	tn, err := c.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	require.Equal(t, want, tn.Bytes())
	srv.Restart()
	// Within a few cool-downs of the breaker, writes reach L3.
	deadline := time.Now().Add(15 * time.Second)
	for c.Stats().L3.Writes == c.Stats().L3.WriteErrors {
		require.False(t, time.Now().After(deadline), "no write reached L3: %+v", c.Stats().L3)
		_, err := c.Evict(testModel)
		require.NoError(t, err)
		_, err = c.Tensor(ctx, testModel, "Const_57")
		require.NoError(t, err)
		c.Flush()
		time.Sleep(100 * time.Millisecond)
	}
}

// A Redis node killed while reads go on: every read completes, with the
// file's bytes, from L2 or the source.
func TestFleet_NodeKilledMidRead(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	a := machine(t, srv.Addr, nil)
	m, err := a.Model(ctx, testModel)
	require.NoError(t, err)
	_, err = m.Load(ctx, nil, func(*Tensor) error { return nil })
	require.NoError(t, err)
	m.Close()
	a.Flush()

	b := machine(t, srv.Addr, nil)
	m, err = b.Model(ctx, testModel)
	require.NoError(t, err)
	defer m.Close()
	served := map[Tier]int{}
	n := 0
	_, err = m.Load(ctx, &LoadOptions{Parallel: 1}, func(tn *Tensor) error {
		if n++; n == 20 {
			srv.Kill()
		}
		served[tn.ServedBy]++
		if !bytesEqual(tn.Bytes(), fileBytes(t, testModel, tn.Name)) {
			return fmt.Errorf("%s: wrong bytes from %s", tn.Name, tn.ServedBy)
		}
		return nil
	})
	require.NoError(t, err)
	require.Positive(t, served[L3])
	require.Positive(t, served[Source], "after the kill, the source: %v", served)
}

// A chunk overwritten in Redis by another client: detected, the tensor
// read from the source, never served wrong.
func TestFleet_OverwrittenChunk(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	a := machine(t, srv.Addr, nil)
	_, err := a.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	a.Flush()
	rdb := a.l3.Client()
	keys, err := rdb.Keys(ctx, "mc:c:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, 1)
	raw, err := rdb.Get(ctx, keys[0]).Bytes()
	require.NoError(t, err)
	raw[len(raw)/3] ^= 0x40
	require.NoError(t, rdb.Set(ctx, keys[0], raw, 0).Err())

	b := machine(t, srv.Addr, nil)
	tn, err := b.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, fileBytes(t, testModel, "Const_59"), tn.Bytes())
	require.Equal(t, uint64(1), b.Stats().L3.Errors)
}

// A namespace dropped on one machine is dropped on every machine within
// epochRefresh.
func TestFleet_DropNamespaceEverywhere(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	a := machine(t, srv.Addr, nil)
	b := machine(t, srv.Addr, nil)
	require.NoError(t, a.Put(ctx, "outputs", "k", []byte("v1"), nil))
	v, err := b.Get(ctx, "outputs", "k", nil)
	require.NoError(t, err)
	require.Equal(t, L3, v.ServedBy)
	v, err = b.Get(ctx, "outputs", "k", nil)
	require.NoError(t, err)
	require.Equal(t, L1, v.ServedBy)

	require.NoError(t, a.DropNamespace(ctx, "outputs"))
	dropped := time.Now()
	for {
		_, err := b.Get(ctx, "outputs", "k", nil)
		if err != nil {
			break
		}
		require.Less(t, time.Since(dropped), epochRefresh+time.Second, "b still serves a dropped namespace")
		time.Sleep(20 * time.Millisecond)
	}
	// A machine that starts later starts at the fleet's epoch.
	c := machine(t, srv.Addr, nil)
	_, err = c.Get(ctx, "outputs", "k", nil)
	require.Error(t, err)
}

// With a fleet key, another client's forged entry is never served.
func TestFleet_ForgedEntryIsNotServed(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	key := []byte(strings.Repeat("k", 32))
	open := func(fleetKey []byte) *Cache {
		return openCache(t, &Options{Dir: t.TempDir(), Logger: nilLogger(), L3: &l3.Options{Addrs: []string{srv.Addr}, FleetKey: fleetKey}})
	}
	a := open(key)
	id, err := loader.Stat(testModel)
	require.NoError(t, err)
	g, err := a.groupOf(id)
	require.NoError(t, err)
	// An attacker without the key writes its own bytes under the tensor's
	// key, in the same format.
	evil, err := l3.Open(&l3.Options{Addrs: []string{srv.Addr}})
	require.NoError(t, err)
	defer evil.Close()
	forged := make([]byte, len(fileBytes(t, testModel, "Const_59")))
	require.NoError(t, evil.Put(ctx, g.Key("Const_59"), "BF16", []uint64{1, 1, 384, 32}, forged, 0))
	tn, err := a.Tensor(ctx, testModel, "Const_59")
	require.NoError(t, err)
	require.Equal(t, Source, tn.ServedBy)
	require.Equal(t, fileBytes(t, testModel, "Const_59"), tn.Bytes())
}

// A load into the caller's buffers that is closed at once (warm load
// does that) writes each tensor to L3 once and reads the origin once: the
// L2 writes it leaves for Close take the tensors from L3.
func TestFleet_LoadIntoThenCloseReadsTheOriginOnce(t *testing.T) {
	srv := testredis.Start(t)
	ctx := context.Background()
	var originBytes atomic.Int64
	c, err := Open(&Options{Dir: t.TempDir(), Origin: countingOrigin{bytes: &originBytes}, Logger: nilLogger(),
		L3: &l3.Options{Addrs: []string{srv.Addr}}})
	require.NoError(t, err)
	m, err := c.Model(ctx, testModel)
	require.NoError(t, err)
	total, tensors := int64(m.Bytes()), len(m.Tensors())
	_, err = m.Load(ctx, &LoadOptions{Into: func(ti *TensorInfo) ([]byte, error) { return make([]byte, ti.Bytes), nil }},
		func(*Tensor) error { return nil })
	require.NoError(t, err)
	m.Close()
	require.NoError(t, c.Close())
	require.Equal(t, total, originBytes.Load())
	look, err := l3.Open(&l3.Options{Addrs: []string{srv.Addr}})
	require.NoError(t, err)
	defer look.Close()
	keys, err := look.Client().Keys(ctx, "mc:m:*").Result()
	require.NoError(t, err)
	require.Len(t, keys, tensors)
	chunks, err := look.Client().Keys(ctx, "mc:c:*").Result()
	require.NoError(t, err)
	require.Len(t, chunks, tensors, "every posenet tensor is one chunk, written once")
}

// prometheusOnly is the collector's metrics of one name, for testutil.
func prometheusOnly(c prometheus.Collector, name string) prometheus.Collector {
	return onlyCollector{c, name}
}

type onlyCollector struct {
	c    prometheus.Collector
	name string
}

func (o onlyCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(o, ch) }
func (o onlyCollector) Collect(ch chan<- prometheus.Metric) {
	all := make(chan prometheus.Metric)
	go func() { o.c.Collect(all); close(all) }()
	for m := range all {
		if strings.Contains(m.Desc().String(), `"`+o.name+`"`) {
			ch <- m
		}
	}
}

// A lookup without a fill takes no lease: it would make other machines
// wait for a write that never comes.
func TestFleet_LookupTakesNoLease(t *testing.T) {
	srv := testredis.Start(t)
	c := machine(t, srv.Addr, nil)
	_, err := c.Get(context.Background(), "ns", "absent", nil)
	require.ErrorIs(t, err, errs.ErrNotFound)
	require.Zero(t, c.Stats().L3.Leases)
	_, err = c.Get(context.Background(), "ns", "filled", func(context.Context) ([]byte, error) { return []byte("v"), nil })
	require.NoError(t, err)
	require.Equal(t, uint64(1), c.Stats().L3.Leases)
}
