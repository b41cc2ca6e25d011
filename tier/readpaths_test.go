package tier

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testmodels"
	"github.com/modelcache/modelcache/internal/testredis"
	"github.com/modelcache/modelcache/l3"
)

// A model-based test of every read path (issue 21, "Tests that keep it one
// path"): random sequences of operations on two caches ("machines", each
// with its own L2 directory) sharing one Redis, checked after every step
// against a plain reference: which bytes each version of each model file
// holds, which value each key of each namespace holds, and how many
// requests each cache served from which tier.
//
// The operations: Cache.Tensor, InRAM, Model handles opened and closed,
// Model.Tensor, Model.Load and Model.All with and without Into (in file or
// ready order, budgets small and large, Into or each failing), OpenTensor
// (Cache's and Model's) with ReadAt at random offsets and lengths and
// WriteTo, readers kept open across later steps, Warm (Cache's and
// Model's), Put, Get with and without fill, GetWith, OpenValue, Delete,
// DropNamespace, lookups of the other machine's values, Evict, GC, Flush,
// a cache closed and reopened on its directory (its handles then say
// ErrClosed), a model file replaced (renamed over, with a new layout or
// one tensor rewritten) or changed in place (a Model of the old version
// then reads its bytes or says ErrChanged), Redis killed (L3 degrades to
// a miss: never wrong bytes, never an error but DropNamespace's) and
// restarted empty, and steps of several reads at once (the same tensor,
// the same model, the same missing value, with Redis killed meanwhile).
//
// Replay a failure with the seed it prints:
//
//	MODELCACHE_MODEL_SEED=N go test -race -run TestReadPaths_Model ./tier/
//
// MODELCACHE_MODEL_OPS sets the number of operations (default 300);
// MODELCACHE_MODEL_TIME runs sequence after sequence, each with the next
// seed, for that long (make fuzz does). FuzzReadPaths drives the same
// operations from the fuzzer's bytes.

func TestReadPaths_Model(t *testing.T) {
	ops := 300
	if testing.Short() {
		ops = 100
	}
	if s := os.Getenv("MODELCACHE_MODEL_OPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			t.Fatalf("MODELCACHE_MODEL_OPS=%q: want a positive number", s)
		}
		ops = n
	}
	seed := testmodels.Seed(t, "MODELCACHE_MODEL_SEED")
	d := os.Getenv("MODELCACHE_MODEL_TIME")
	if d == "" {
		runReadPaths(t, seedRand{rand.New(rand.NewPCG(seed, 21))}, seed, fmt.Sprintf("seed %d", seed), ops)
		return
	}
	long, err := time.ParseDuration(d)
	if err != nil {
		t.Fatalf("MODELCACHE_MODEL_TIME=%q: %v", d, err)
	}
	deadline := time.Now().Add(long)
	for s := seed; time.Now().Before(deadline); s++ {
		ok := t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) {
			runReadPaths(t, seedRand{rand.New(rand.NewPCG(s, 21))}, s, fmt.Sprintf("seed %d (MODELCACHE_MODEL_SEED=%d)", s, s), ops)
		})
		if !ok {
			return
		}
	}
}

// FuzzReadPaths is TestReadPaths_Model with the fuzzer's bytes choosing
// the operations (a byte or two for each choice) until they run out.
func FuzzReadPaths(f *testing.F) {
	f.Add([]byte("\x01ab"))
	for i := range 4 {
		r := rand.New(rand.NewPCG(uint64(i), 5))
		b := make([]byte, 48+32*i)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		b[0] = byte(i) // L3 on for odd i
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 600 {
			b = b[:600]
		}
		h := fnv.New64a()
		h.Write(b)
		runReadPaths(t, &byteRand{b: b}, h.Sum64(), fmt.Sprintf("fuzz input %q", b), len(b))
	})
}

// mbRand makes the choices of a run.
type mbRand interface {
	IntN(n int) int
	exhausted() bool
}

type seedRand struct{ r *rand.Rand }

func (s seedRand) IntN(n int) int { return s.r.IntN(n) }
func (seedRand) exhausted() bool  { return false }

// byteRand reads choices from bytes: 0 once they are used up.
type byteRand struct {
	b []byte
	i int
}

func (s *byteRand) IntN(n int) int {
	if n <= 1 {
		return 0
	}
	v, k := 0, 1
	if n > 256 {
		k = 2
	}
	for range k {
		if s.i < len(s.b) {
			v = v<<8 | int(s.b[s.i])
		}
		s.i++
	}
	return v % n
}

func (s *byteRand) exhausted() bool { return s.i >= len(s.b) }

// mbWorld is the run: the model files, Redis, the machines, the reference.
type mbWorld struct {
	t     testing.TB
	r     mbRand
	data  *rand.Rand // tensor and value contents
	label string
	ctx   context.Context

	dir   string
	paths []string
	vers  []*mbVersion
	cur   map[string]*mbVersion
	mtime int64

	srv         *testredis.Server
	l3, l3Up    bool
	mem, wbSize int64
	chunk       int
	digest      bool
	ms          []*mbMachine

	step  int
	op    string
	trail []string

	mu    sync.Mutex // guards errs and fills during a step of reads at once
	errs  []string
	fills int
}

// mbVersion is one version of a model file: its tensors in storage order.
type mbVersion struct {
	id      int
	path    string
	names   []string
	t       map[string]*mbTensor
	bytes   uint64
	headLen int
	// tainted: its file was changed in place, so that a Model of this
	// version reads what it has in the cache, or says ErrChanged.
	tainted bool
}

type mbTensor struct {
	dtype string
	shape []uint64
	off   int
	data  []byte
}

type mbMachine struct {
	w       *mbWorld
	name    string
	dir     string
	c       *Cache
	handles []*mbHandle
	readers []*mbReader
	nss     []string
	vals    map[string]map[string]*mbValue // namespace → key → what it may hold
	hist    map[string][][]byte            // namespace/key → every value stored under it

	mu        sync.Mutex  // guards now and resync
	now, life mbCounts    // this session's requests; those of the sessions before
	resync    bool        // a request may have counted in a way the test cannot tell: take Stats'
	bg        atomic.Bool // a load gave up: a flight of it may still run (a later read may be Shared)
	dropsBase uint64      // L2 writes dropped in the sessions before
	l3Lost    bool        // Redis was killed since this cache opened
}

type mbHandle struct {
	m *Model
	v *mbVersion
}

type mbReader struct {
	r         *TensorReader
	what      string
	want      []byte
	v         *mbVersion // a tensor's version (nil: a value)
	disturbed bool       // anything but reads happened since it was opened: an error is allowed
}

// mbValue is what a key may hold: one of cands, or nothing if absent.
type mbValue struct {
	cands  []mbBytes
	absent bool
	// soft: stored by a fill, through the write-behind queue, which may
	// drop it: gone is then allowed once more drops than dropsAt happened.
	soft    bool
	dropsAt uint64
}

type mbBytes struct {
	data  []byte
	dtype string
}

type mbCounts struct {
	req, failed            uint64
	by                     [numTiers]uint64
	vreq, vabsent, vfailed uint64
	vby                    [numTiers]uint64
}

func (a mbCounts) plus(b mbCounts) mbCounts {
	a.req += b.req
	a.failed += b.failed
	a.vreq += b.vreq
	a.vabsent += b.vabsent
	a.vfailed += b.vfailed
	for i := range a.by {
		a.by[i] += b.by[i]
		a.vby[i] += b.vby[i]
	}
	return a
}

// countsOf is what Stats says of this session.
func countsOf(s Stats) mbCounts {
	var n mbCounts
	n.req, n.failed = s.Requests, s.Failed
	n.by[L1], n.by[L2], n.by[L3], n.by[Source], n.by[Shared] = s.L1Hits, s.L2Hits, s.L3Hits, s.SourceLoads, s.SharedLoads
	v := s.Values
	n.vreq, n.vabsent, n.vfailed = v.Requests, v.Absent, v.Failed
	n.vby[L1], n.vby[L2], n.vby[L3], n.vby[Fill], n.vby[Shared] = v.Tiers[0].Hits, v.Tiers[1].Hits, v.Tiers[2].Hits, v.Tiers[3].Hits, v.Tiers[4].Hits
	return n
}

func runReadPaths(t testing.TB, r mbRand, seed uint64, label string, ops int) {
	w := &mbWorld{t: t, r: r, data: rand.New(rand.NewPCG(seed, 77)), label: label, ctx: context.Background(),
		dir: t.TempDir(), cur: map[string]*mbVersion{}}
	// The run's configuration.
	w.l3 = r.IntN(2) == 1
	if w.l3 {
		if _, err := exec.LookPath("redis-server"); err != nil && os.Getenv("MODELCACHE_REQUIRE_REDIS") == "" {
			t.Logf("redis-server not found: this run has no L3")
			w.l3 = false
		}
	}
	if w.l3 {
		w.srv = testredis.Start(t)
		w.l3Up = true
	}
	w.mem = []int64{96 << 10, 512 << 10, 8 << 20}[r.IntN(3)]
	w.wbSize = []int64{24 << 10, 8 << 20}[r.IntN(2)]
	w.chunk = []int{1 << 10, 4 << 10, 64 << 10}[r.IntN(3)]
	w.digest = r.IntN(4) == 0
	t.Logf("%s: L3 %v, L1 %d, write-behind %d, chunks %d, content digest %v", label, w.l3, w.mem, w.wbSize, w.chunk, w.digest)
	for i := range 2 {
		p := filepath.Join(w.dir, fmt.Sprintf("model%d.safetensors", i))
		w.paths = append(w.paths, p)
		w.install(w.layout(p), false)
	}
	for _, name := range []string{"a", "b"} {
		m := &mbMachine{w: w, name: name, dir: t.TempDir(), vals: map[string]map[string]*mbValue{}, hist: map[string][][]byte{}}
		m.nss = []string{name + "/outputs", name + "/kv"}
		for _, ns := range m.nss {
			m.vals[ns] = map[string]*mbValue{}
		}
		m.open()
		w.ms = append(w.ms, m)
	}
	t.Cleanup(func() {
		for _, m := range w.ms {
			for _, r := range m.readers {
				r.r.Close()
			}
			for _, h := range m.handles {
				h.m.Close()
			}
			if m.c != nil {
				if err := m.c.Close(); err != nil {
					t.Errorf("closing machine %s: %v", m.name, err)
				}
			}
		}
	})
	start := time.Now()
	tally := map[string]int{}
	for w.step = 0; w.step < ops && !r.exhausted(); w.step++ {
		w.op = w.doStep()
		tally[strings.Fields(w.op)[0]]++
		w.trail = append(w.trail, fmt.Sprintf("%d: %s", w.step, w.op))
		if len(w.trail) > 40 {
			w.trail = w.trail[1:]
		}
		w.flushErrs()
		for _, m := range w.ms {
			m.checkStats()
		}
		w.flushErrs()
	}
	var served mbCounts
	for _, m := range w.ms {
		served = served.plus(m.life).plus(m.now)
	}
	t.Logf("%s: %d steps in %v; ops %v; tensor reads by tier L1 %d L2 %d L3 %d source %d shared %d failed %d; values L1 %d L2 %d L3 %d fill %d shared %d absent %d",
		label, w.step, time.Since(start).Round(time.Millisecond), tally,
		served.by[L1], served.by[L2], served.by[L3], served.by[Source], served.by[Shared], served.failed,
		served.vby[L1], served.vby[L2], served.vby[L3], served.vby[Fill], served.vby[Shared], served.vabsent)
}

// errf records a failure of the current step (from any goroutine).
func (w *mbWorld) errf(format string, args ...any) {
	w.mu.Lock()
	w.errs = append(w.errs, fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

func (w *mbWorld) flushErrs() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) == 0 {
		return
	}
	w.t.Fatalf("%s, step %d (%s):\n  %s\nlast steps:\n  %s", w.label, w.step, w.op,
		strings.Join(w.errs, "\n  "), strings.Join(w.trail, "\n  "))
}

// ---- model files

var mbDTypes = []string{"U8", "BF16", "F16", "F32", "I32"}

// layout is a new version of the file at path: one to six tensors of
// random names, types and sizes (now and then empty, or of several chunks).
func (w *mbWorld) layout(path string) *mbVersion {
	v := &mbVersion{path: path, t: map[string]*mbTensor{}}
	n := 1 + w.data.IntN(6)
	for _, i := range w.data.Perm(8)[:n] {
		name := fmt.Sprintf("w%d", i)
		dt := mbDTypes[w.data.IntN(len(mbDTypes))]
		width := dtypeWidth(dt)
		var size int
		switch k := w.data.IntN(20); {
		case k == 0:
			size = 0
		case k < 3:
			size = 16<<10 + w.data.IntN(48<<10)
		default:
			size = 1 + w.data.IntN(6000)
		}
		elems := uint64(size / width)
		shape := []uint64{elems}
		if elems%2 == 0 && elems > 0 && w.data.IntN(2) == 0 {
			shape = []uint64{2, elems / 2}
		}
		data := make([]byte, elems*uint64(width))
		for j := range data {
			data[j] = byte(w.data.Uint32())
		}
		v.names = append(v.names, name)
		v.t[name] = &mbTensor{dtype: dt, shape: shape, data: data}
	}
	return v
}

// changed is a copy of v with one tensor's bytes rewritten (same sizes).
func (w *mbWorld) changed(v *mbVersion) *mbVersion {
	nv := &mbVersion{path: v.path, names: slices.Clone(v.names), t: map[string]*mbTensor{}}
	for n, t := range v.t {
		nt := *t
		nv.t[n] = &nt
	}
	var nonEmpty []string
	for _, n := range v.names {
		if len(v.t[n].data) > 0 {
			nonEmpty = append(nonEmpty, n)
		}
	}
	if len(nonEmpty) > 0 {
		t := nv.t[nonEmpty[w.data.IntN(len(nonEmpty))]]
		t.data = bytes.Clone(t.data)
		for j := range t.data {
			t.data[j] = byte(w.data.Uint32())
		}
	}
	return nv
}

// file is v's safetensors file; it sets each tensor's offset in it.
func (v *mbVersion) file() []byte {
	type entry struct {
		DType   string    `json:"dtype"`
		Shape   []uint64  `json:"shape"`
		Offsets [2]uint64 `json:"data_offsets"`
	}
	head := map[string]entry{}
	var data []byte
	v.bytes = 0
	for _, n := range v.names {
		t := v.t[n]
		head[n] = entry{t.dtype, t.shape, [2]uint64{uint64(len(data)), uint64(len(data) + len(t.data))}}
		t.off = len(data)
		data = append(data, t.data...)
		v.bytes += uint64(len(t.data))
	}
	h, err := json.Marshal(head)
	if err != nil {
		panic(err)
	}
	v.headLen = len(h)
	return testmodels.Build(string(h), data)
}

// install makes v the file at its path: written anew and renamed over the
// old one, or (inPlace, v of the same layout as the current version) the
// changed bytes written into the file itself. Each version gets a
// modification time of its own, so that its identity is new.
func (w *mbWorld) install(v *mbVersion, inPlace bool) {
	v.id = len(w.vers)
	w.vers = append(w.vers, v)
	b := v.file()
	w.mtime++
	mt := time.Unix(1_000_000_000+w.mtime, 0)
	if inPlace {
		old := w.cur[v.path]
		f, err := os.OpenFile(v.path, os.O_WRONLY, 0)
		if err != nil {
			w.t.Fatal(err)
		}
		for _, n := range v.names {
			if !bytes.Equal(old.t[n].data, v.t[n].data) {
				if _, err := f.WriteAt(v.t[n].data, int64(8+v.headLen+v.t[n].off)); err != nil {
					w.t.Fatal(err)
				}
			}
		}
		if err := f.Close(); err != nil {
			w.t.Fatal(err)
		}
		old.tainted = true
	} else {
		tmp := v.path + ".new"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			w.t.Fatal(err)
		}
		if err := os.Chtimes(tmp, mt, mt); err != nil {
			w.t.Fatal(err)
		}
		if err := os.Rename(tmp, v.path); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := os.Chtimes(v.path, mt, mt); err != nil {
		w.t.Fatal(err)
	}
	w.cur[v.path] = v
}

// ---- machines

func (m *mbMachine) options() *Options {
	w := m.w
	o := &Options{Dir: m.dir, MemoryBytes: w.mem, WriteBehindBytes: w.wbSize, L3WriteBytes: w.wbSize, ChunkSize: w.chunk,
		ContentDigest: w.digest, Logger: nilLogger()}
	if w.l3 {
		// Short leases and timeouts: a lease whose holder lost Redis, or
		// an operation on a killed server, holds a read this long at most.
		o.L3 = &l3.Options{Addrs: []string{w.srv.Addr}, BreakerCooldown: 50 * time.Millisecond, ChunkSize: 4 << 10,
			Timeout: 500 * time.Millisecond, LeasePeriod: 600 * time.Millisecond}
	}
	return o
}

func (m *mbMachine) open() {
	c, err := Open(m.options())
	if err != nil {
		m.w.t.Fatalf("%s: opening machine %s (L3 up %v): %v", m.w.label, m.name, m.w.l3Up, err)
	}
	m.c = c
	m.now = mbCounts{}
	m.bg.Store(false)
	m.l3Lost = !m.w.l3Up
}

func (m *mbMachine) count(f func(n *mbCounts)) {
	m.mu.Lock()
	f(&m.now)
	m.mu.Unlock()
}

func (m *mbMachine) tensorServed(by Tier, err error) {
	m.count(func(n *mbCounts) {
		n.req++
		if err != nil {
			n.failed++
		} else {
			n.by[by]++
		}
	})
}

func (m *mbMachine) valueServed(by Tier, err error) {
	m.count(func(n *mbCounts) {
		n.vreq++
		switch {
		case err == nil:
			n.vby[by]++
		case errors.Is(err, errs.ErrNotFound):
			n.vabsent++
		default:
			n.vfailed++
		}
	})
}

func (m *mbMachine) uncertain() {
	m.mu.Lock()
	m.resync = true
	m.mu.Unlock()
}

// drops are the L2 (and L3) writes this machine's queues dropped or
// failed, in every session.
func (m *mbMachine) drops() uint64 {
	s := m.c.Stats()
	return m.dropsBase + s.WriteBehindDropped + s.WriteBehindErrors + s.L3.WriteDropped + s.L3.WriteErrors
}

// checkStats checks that Stats' counters add up and say what the test
// counted, in this session and over the directory's lifetime.
func (m *mbMachine) checkStats() {
	w := m.w
	s := m.c.Stats()
	if sum := s.L1Hits + s.L2Hits + s.L3Hits + s.SourceLoads + s.SharedLoads + s.Failed; s.Requests != sum {
		w.errf("machine %s: Requests %d, but L1+L2+L3+Source+Shared+Failed = %d (%+v)", m.name, s.Requests, sum, s)
	}
	l := s.Lifetime
	if sum := l.L1Hits + l.L2Hits + l.L3Hits + l.SourceLoads + l.SharedLoads + l.Failed; l.Requests != sum {
		w.errf("machine %s: Lifetime.Requests %d, but its tiers and Failed add up to %d (%+v)", m.name, l.Requests, sum, l)
	}
	if !w.l3 && (s.L3Hits != 0 || s.Values.Tiers[2].Hits != 0) {
		w.errf("machine %s: L3 hits without L3", m.name)
	}
	got := countsOf(s)
	if m.resync {
		m.now, m.resync = got, false
	}
	if got != m.now {
		w.errf("machine %s: Stats count this session's requests as %+v, the test as %+v", m.name, got, m.now)
		m.now = got
	}
	want := m.life.plus(m.now)
	lt := Counters{Requests: want.req, L1Hits: want.by[L1], L2Hits: want.by[L2], L3Hits: want.by[L3],
		SourceLoads: want.by[Source], SharedLoads: want.by[Shared], Failed: want.failed}
	l.L2Misses, l.WarmLoads, l.L2Errors = 0, 0, 0
	if l != lt {
		w.errf("machine %s: Lifetime is %+v, the sessions' requests %+v", m.name, l, lt)
	}
	if lv := s.LifetimeMeasured.Values; lv.Requests != want.vreq || lv.Absent != want.vabsent {
		w.errf("machine %s: LifetimeMeasured.Values has %d requests (%d absent), the sessions %d (%d)", m.name, lv.Requests, lv.Absent, want.vreq, want.vabsent)
	}
}

// ---- steps

type mbOp struct {
	name   string
	weight int
	do     func(w *mbWorld, m *mbMachine) string
}

var mbOps = []mbOp{
	{"tensor", 12, (*mbWorld).opTensor},
	{"missing", 2, (*mbWorld).opMissing},
	{"inram", 3, (*mbWorld).opInRAM},
	{"model", 4, (*mbWorld).opOpenHandle},
	{"unmodel", 2, (*mbWorld).opCloseHandle},
	{"mtensor", 8, (*mbWorld).opModelTensor},
	{"load", 9, (*mbWorld).opLoad},
	{"open", 8, (*mbWorld).opOpenTensor},
	{"reader", 4, (*mbWorld).opReader},
	{"warm", 4, (*mbWorld).opWarm},
	{"evict", 2, (*mbWorld).opEvict},
	{"gc", 1, (*mbWorld).opGC},
	{"flush", 2, (*mbWorld).opFlush},
	{"replace", 3, (*mbWorld).opReplace},
	{"rewrite", 2, (*mbWorld).opRewrite},
	{"reopen", 2, (*mbWorld).opReopen},
	{"l3", 2, (*mbWorld).opRedis},
	{"put", 6, (*mbWorld).opPut},
	{"fill", 6, (*mbWorld).opFill},
	{"get", 5, (*mbWorld).opGet},
	{"openvalue", 4, (*mbWorld).opOpenValue},
	{"delete", 3, (*mbWorld).opDelete},
	{"drop", 1, (*mbWorld).opDrop},
	{"cross", 3, (*mbWorld).opCross},
	{"together", 6, (*mbWorld).opTogether},
}

func (w *mbWorld) doStep() string {
	total := 0
	for _, o := range mbOps {
		total += o.weight
	}
	k := w.r.IntN(total)
	m := w.ms[w.r.IntN(len(w.ms))]
	for _, o := range mbOps {
		if k < o.weight {
			return o.name + " " + m.name + ": " + o.do(w, m)
		}
		k -= o.weight
	}
	panic("unreachable")
}

func (w *mbWorld) anyPath() string { return w.paths[w.r.IntN(len(w.paths))] }

// anyName is one of v's tensors, or (1 in 10) one it does not have.
func (w *mbWorld) anyName(v *mbVersion) string {
	if w.r.IntN(10) == 0 || len(v.names) == 0 {
		return fmt.Sprintf("w%d", w.r.IntN(10))
	}
	return v.names[w.r.IntN(len(v.names))]
}

func (m *mbMachine) anyHandle() *mbHandle {
	if len(m.handles) == 0 {
		m.w.opOpenHandle(m)
	}
	return m.handles[m.w.r.IntN(len(m.handles))]
}

// disturb marks the machine's open readers (all machines' with all) as
// disturbed: their next read may fail, never return other bytes.
func (w *mbWorld) disturb(ms ...*mbMachine) {
	for _, m := range ms {
		for _, r := range m.readers {
			r.disturbed = true
		}
	}
}

// tiersOK checks what served a read: Shared only when reads ran at once
// (or a load that gave up may have left its flight running), L3 only while
// Redis runs (or was killed during the step).
func (w *mbWorld) tiersOK(m *mbMachine, what string, by Tier, together bool, value bool) {
	switch by {
	case L1, L2:
	case Source:
		if value {
			w.errf("%s: value served by Source", what)
		}
	case Fill:
		if !value {
			w.errf("%s: tensor served by Fill", what)
		}
	case Shared:
		if !together && !m.bg.Load() {
			w.errf("%s: served by Shared, but no other read of it ran", what)
		}
	case L3:
		if !w.l3 || (!w.l3Up && !together) {
			w.errf("%s: served by L3, but L3 is %s", what, map[bool]string{true: "down", false: "not configured"}[w.l3])
		}
	default:
		w.errf("%s: served by %v", what, by)
	}
}

// sameBytes checks got against want, saying which version got is if not.
func (w *mbWorld) sameBytes(what string, v *mbVersion, name string, got []byte) bool {
	want := v.t[name].data
	if bytes.Equal(got, want) {
		return true
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	is := ""
	for _, o := range w.vers {
		if o.path == v.path && o.t[name] != nil && bytes.Equal(o.t[name].data, got) {
			is = fmt.Sprintf(" (they are version %d's)", o.id)
		}
	}
	w.errf("%s: %d bytes, want version %d's %d: first difference at %d%s", what, len(got), v.id, len(want), i, is)
	return false
}

// checkTensor checks a read of tensor name of version v.
func (w *mbWorld) checkTensor(m *mbMachine, what string, v *mbVersion, name string, t *Tensor, err error, together bool) {
	m.tensorServed(servedBy(t), err)
	want, ok := v.t[name]
	switch {
	case !ok:
		if !errors.Is(err, errs.ErrNotFound) {
			w.errf("%s: a tensor version %d does not have: %v, want ErrNotFound", what, v.id, err)
		}
	case err != nil:
		if !(v.tainted && errors.Is(err, errs.ErrChanged)) {
			w.errf("%s: %v", what, err)
		}
	default:
		w.tiersOK(m, what, t.ServedBy, together, false)
		if t.Name != name || t.DType != want.dtype || !slices.Equal(t.Shape, want.shape) {
			w.errf("%s: %s %s %v, want %s %s %v", what, t.Name, t.DType, t.Shape, name, want.dtype, want.shape)
		}
		w.sameBytes(fmt.Sprintf("%s (served by %v)", what, t.ServedBy), v, name, t.Bytes())
	}
}

func (w *mbWorld) opTensor(m *mbMachine) string {
	p := w.anyPath()
	v := w.cur[p]
	name := w.anyName(v)
	what := fmt.Sprintf("Tensor(%s v%d, %s)", filepath.Base(p), v.id, name)
	t, err := m.c.Tensor(w.ctx, p, name)
	w.checkTensor(m, what, v, name, t, err, false)
	return what
}

func (w *mbWorld) opMissing(m *mbMachine) string {
	p := filepath.Join(w.dir, "no-such-model.safetensors")
	_, err := m.c.Tensor(w.ctx, p, "w0")
	m.tensorServed(Source, err)
	if err == nil {
		w.errf("Tensor of a missing file: no error")
	}
	return "Tensor(no-such-model)"
}

func (w *mbWorld) opInRAM(m *mbMachine) string {
	p := w.anyPath()
	v := w.cur[p]
	name := w.anyName(v)
	what := fmt.Sprintf("InRAM(%s v%d, %s)", filepath.Base(p), v.id, name)
	t, ok := m.c.InRAM(w.ctx, p, name)
	if ok {
		m.tensorServed(L1, nil)
		if v.t[name] == nil {
			w.errf("%s: found a tensor the version does not have", what)
		} else {
			w.sameBytes(what, v, name, t.Bytes())
		}
	}
	return fmt.Sprintf("%s: %v", what, ok)
}

func (w *mbWorld) opOpenHandle(m *mbMachine) string {
	if len(m.handles) >= 4 {
		return w.opCloseHandle(m)
	}
	p := w.anyPath()
	v := w.cur[p]
	h, err := m.c.Model(w.ctx, p)
	if err != nil {
		w.errf("Model(%s): %v", p, err)
		w.flushErrs()
	}
	if got := h.Tensors(); len(got) != len(v.names) {
		w.errf("Model(%s v%d): %d tensors, want %d", filepath.Base(p), v.id, len(got), len(v.names))
	} else {
		for i, ti := range got {
			if ti.Name != v.names[i] || ti.Bytes != uint64(len(v.t[ti.Name].data)) {
				w.errf("Model(%s v%d): tensor %d is %s of %d bytes, want %s (storage order)", filepath.Base(p), v.id, i, ti.Name, ti.Bytes, v.names[i])
			}
		}
	}
	for _, o := range m.handles {
		if o.v.path == p && (o.v == v) != (o.m.Version() == h.Version()) {
			w.errf("Model(%s): version v%d is %q, v%d's %q", filepath.Base(p), v.id, h.Version(), o.v.id, o.m.Version())
		}
	}
	m.handles = append(m.handles, &mbHandle{m: h, v: v})
	return fmt.Sprintf("Model(%s v%d)", filepath.Base(p), v.id)
}

func (w *mbWorld) opCloseHandle(m *mbMachine) string {
	if len(m.handles) == 0 {
		return "no handle"
	}
	i := w.r.IntN(len(m.handles))
	h := m.handles[i]
	m.handles = slices.Delete(m.handles, i, i+1)
	h.m.Close()
	if _, err := h.m.Tensor(w.ctx, "w0"); !errors.Is(err, errs.ErrClosed) {
		w.errf("Tensor of a closed Model: %v, want ErrClosed", err)
	}
	m.tensorServed(Source, errs.ErrClosed)
	return fmt.Sprintf("Close(model v%d)", h.v.id)
}

func (w *mbWorld) opModelTensor(m *mbMachine) string {
	h := m.anyHandle()
	name := w.anyName(h.v)
	what := fmt.Sprintf("Model(v%d).Tensor(%s)", h.v.id, name)
	t, err := h.m.Tensor(w.ctx, name)
	w.checkTensor(m, what, h.v, name, t, err, false)
	return what
}

var errMBInjected = errors.New("mb: injected failure")

// load runs h.Load or h.All with random options and checks what it
// delivers; inject lets Into or each fail.
func (w *mbWorld) load(m *mbMachine, h *mbHandle, inject, together bool, choose func(int) int) string {
	v := h.v
	o := &LoadOptions{}
	into := choose(2) == 1
	if choose(2) == 1 {
		o.Order = ReadyOrder
	}
	o.Parallel = []int{0, 1, 3}[choose(3)]
	o.MaxInFlight = []int64{0, 1, 20 << 10}[choose(3)]
	iterate := choose(4) == 0
	failAt, failInto := -1, false
	if inject && choose(6) == 0 && len(v.names) > 0 {
		failAt, failInto = choose(len(v.names)), into && choose(2) == 0
	}
	what := fmt.Sprintf("Model(v%d).%s(into %v, order %v, parallel %d, in flight %d, fail at %d (into %v))",
		v.id, map[bool]string{true: "All", false: "Load"}[iterate], into, o.Order, o.Parallel, o.MaxInFlight, failAt, failInto)
	var mu sync.Mutex
	calls := map[string]int{}
	bufs := map[string][]byte{}
	if into {
		o.Into = func(ti *TensorInfo) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			calls[ti.Name]++
			if failInto && failAt >= 0 && ti.Name == v.names[failAt] {
				return nil, errMBInjected
			}
			b := make([]byte, ti.Bytes)
			bufs[ti.Name] = b
			return b, nil
		}
	}
	var seen []string
	var bad []string
	each := func(t *Tensor) error {
		seen = append(seen, t.Name)
		if !failInto && failAt >= 0 && t.Name == v.names[failAt] {
			return errMBInjected
		}
		want, ok := v.t[t.Name]
		if !ok {
			bad = append(bad, "a tensor the version does not have: "+t.Name)
			return nil
		}
		w.tiersOK(m, what+" "+t.Name, t.ServedBy, together, false)
		if t.DType != want.dtype || !slices.Equal(t.Shape, want.shape) {
			bad = append(bad, fmt.Sprintf("%s: %s %v, want %s %v", t.Name, t.DType, t.Shape, want.dtype, want.shape))
		}
		w.sameBytes(fmt.Sprintf("%s: %s (served by %v)", what, t.Name, t.ServedBy), v, t.Name, t.Bytes())
		if into && len(t.Bytes()) > 0 {
			mu.Lock()
			b := bufs[t.Name]
			mu.Unlock()
			if &b[0] != &t.Bytes()[0] {
				bad = append(bad, t.Name+": not delivered in the buffer Into gave")
			}
		}
		return nil
	}
	var res *LoadResult
	var err error
	if iterate {
		stopAt := -1
		if inject && choose(4) == 0 {
			stopAt = choose(len(v.names) + 1)
		}
		n := 0
		for t, e := range h.m.All(w.ctx, o) {
			if e != nil {
				err = e
				break
			}
			if n == stopAt {
				err = errMBInjected
				break
			}
			n++
			if e := each(t); e != nil {
				err = e
				break
			}
		}
		if err == nil {
			res = &LoadResult{Tensors: len(seen)} // All says no more
		}
	} else {
		res, err = h.m.Load(w.ctx, o, each)
	}
	for _, b := range bad {
		w.errf("%s: %s", what, b)
	}
	if err != nil {
		// Which tensors counted, and as what, the test cannot tell.
		m.uncertain()
		if !into {
			m.bg.Store(true)
		}
		if !errors.Is(err, errMBInjected) && !(v.tainted && errors.Is(err, errs.ErrChanged)) {
			w.errf("%s: %v", what, err)
		}
		return what + ": " + err.Error()
	}
	if failAt >= 0 {
		w.errf("%s: the injected failure was not returned", what)
	}
	if !slices.Equal(slices.Sorted(slices.Values(seen)), slices.Sorted(slices.Values(v.names))) {
		w.errf("%s: delivered %v, want %v", what, seen, v.names)
	}
	if o.Order == FileOrder && !slices.Equal(seen, v.names) {
		w.errf("%s: delivered %v, not in storage order %v", what, seen, v.names)
	}
	if into {
		for _, n := range v.names {
			if calls[n] != 1 {
				w.errf("%s: Into called %d times for %s", what, calls[n], n)
			}
		}
	}
	if iterate {
		m.uncertain() // All reports no tiers
	} else {
		if res.Tensors != len(v.names) || res.Bytes != v.bytes || res.L1+res.L2+res.L3+res.Source+res.Shared != res.Tensors {
			w.errf("%s: result %+v for %d tensors of %d bytes", what, res, len(v.names), v.bytes)
		}
		m.count(func(n *mbCounts) {
			n.req += uint64(res.Tensors)
			n.by[L1] += uint64(res.L1)
			n.by[L2] += uint64(res.L2)
			n.by[L3] += uint64(res.L3)
			n.by[Source] += uint64(res.Source)
			n.by[Shared] += uint64(res.Shared)
		})
	}
	if into && !together {
		// The cache keeps no reference to the caller's buffers.
		for _, b := range bufs {
			for i := range b {
				b[i] = 0xA5
			}
		}
		if len(v.names) > 0 {
			name := v.names[choose(len(v.names))]
			t, err := h.m.Tensor(w.ctx, name)
			w.checkTensor(m, what+", then Tensor("+name+") with its buffers overwritten", v, name, t, err, together)
		}
	}
	return what
}

func (w *mbWorld) opLoad(m *mbMachine) string {
	return w.load(m, m.anyHandle(), true, false, w.r.IntN)
}

// readerChecks reads r at random offsets and lengths and whole, against
// want; failed says whether an error is allowed, and reports one.
func (w *mbWorld) readerChecks(what string, r *TensorReader, want []byte, mayFail func(error) bool, choose func(int) int) {
	size := int64(len(want))
	if r.Size() != size {
		w.errf("%s: Size %d, want %d", what, r.Size(), size)
		return
	}
	for range 1 + choose(4) {
		off := int64(choose(int(size) + 3))
		n := choose(int(max(size-off, 0)) + 3)
		if choose(4) == 0 && off < size {
			n = int(size - off) // to the end exactly
		}
		p := make([]byte, n)
		got, err := r.ReadAt(p, off)
		end := min(off+int64(n), size)
		wantN := int(max(end-off, 0))
		switch {
		case err != nil && err != io.EOF:
			if !mayFail(err) {
				w.errf("%s: ReadAt(%d bytes at %d): %v", what, n, off, err)
			}
			continue
		case got != wantN:
			w.errf("%s: ReadAt(%d bytes at %d) read %d, want %d", what, n, off, got, wantN)
		case (err == io.EOF) != (off+int64(n) > size && n > 0):
			w.errf("%s: ReadAt(%d bytes at %d of %d): err %v", what, n, off, size, err)
		}
		if got == wantN && wantN > 0 && !bytes.Equal(p[:got], want[off:end]) {
			w.errf("%s: ReadAt(%d bytes at %d): wrong bytes", what, n, off)
		}
	}
	if choose(2) == 0 {
		var buf bytes.Buffer
		n, err := r.WriteTo(&buf)
		switch {
		case err != nil:
			if !mayFail(err) {
				w.errf("%s: WriteTo: %v", what, err)
			}
		case n != size || !bytes.Equal(buf.Bytes(), want):
			w.errf("%s: WriteTo wrote %d bytes (equal: %v), want %d", what, n, bytes.Equal(buf.Bytes(), want), size)
		}
	}
}

// openTensor opens a tensor through Cache.OpenTensor (the current version)
// or a handle, reads it and keeps it open or closes it.
func (w *mbWorld) openTensor(m *mbMachine, together bool, choose func(int) int) string {
	var v *mbVersion
	var r *TensorReader
	var err error
	var what string
	if choose(2) == 0 {
		p := w.paths[choose(len(w.paths))]
		v = w.cur[p]
		name := w.anyNameWith(v, choose)
		what = fmt.Sprintf("OpenTensor(%s v%d, %s)", filepath.Base(p), v.id, name)
		r, err = m.c.OpenTensor(w.ctx, p, name)
		return w.checkOpened(m, what, v, name, r, err, together, choose)
	}
	h := m.handles
	if len(h) == 0 {
		return "no handle"
	}
	hd := h[choose(len(h))]
	v = hd.v
	name := w.anyNameWith(v, choose)
	what = fmt.Sprintf("Model(v%d).OpenTensor(%s)", v.id, name)
	r, err = hd.m.OpenTensor(w.ctx, name)
	return w.checkOpened(m, what, v, name, r, err, together, choose)
}

func (w *mbWorld) anyNameWith(v *mbVersion, choose func(int) int) string {
	if choose(10) == 0 || len(v.names) == 0 {
		return fmt.Sprintf("w%d", choose(10))
	}
	return v.names[choose(len(v.names))]
}

func (w *mbWorld) checkOpened(m *mbMachine, what string, v *mbVersion, name string, r *TensorReader, err error, together bool, choose func(int) int) string {
	by := Source
	if r != nil {
		by = r.ServedBy
	}
	m.tensorServed(by, err)
	want, ok := v.t[name]
	switch {
	case !ok:
		if !errors.Is(err, errs.ErrNotFound) {
			w.errf("%s: a tensor version %d does not have: %v, want ErrNotFound", what, v.id, err)
		}
		if r != nil {
			r.Close()
		}
		return what
	case err != nil:
		if !(v.tainted && errors.Is(err, errs.ErrChanged)) {
			w.errf("%s: %v", what, err)
		}
		return what + ": " + err.Error()
	}
	w.tiersOK(m, what, r.ServedBy, together, false)
	if r.DType != want.dtype || !slices.Equal(r.Shape, want.shape) {
		w.errf("%s: %s %v, want %s %v", what, r.DType, r.Shape, want.dtype, want.shape)
	}
	what = fmt.Sprintf("%s (served by %v)", what, r.ServedBy)
	w.readerChecks(what, r, want.data, func(err error) bool { return v.tainted && errors.Is(err, errs.ErrChanged) }, choose)
	if !together && choose(3) == 0 && len(m.readers) < 3 {
		m.readers = append(m.readers, &mbReader{r: r, what: what, want: want.data, v: v})
		return what + ", kept open"
	}
	r.Close()
	return what
}

func (w *mbWorld) opOpenTensor(m *mbMachine) string { return w.openTensor(m, false, w.r.IntN) }

func (w *mbWorld) opReader(m *mbMachine) string {
	if len(m.readers) == 0 {
		return "no reader"
	}
	i := w.r.IntN(len(m.readers))
	rd := m.readers[i]
	w.readerChecks(rd.what+", later", rd.r, rd.want, func(err error) bool {
		return rd.disturbed || (rd.v != nil && rd.v.tainted && errors.Is(err, errs.ErrChanged))
	}, w.r.IntN)
	if w.r.IntN(2) == 0 {
		rd.r.Close()
		m.readers = slices.Delete(m.readers, i, i+1)
		return rd.what + ", read and closed"
	}
	return rd.what + ", read"
}

// flushEntries flushes m and counts the L2 entries of the current version
// of path.
func (w *mbWorld) flushEntries(m *mbMachine, p string) int {
	m.c.Flush()
	n, _, _, err := m.c.FileEntries(p)
	if err != nil {
		w.errf("FileEntries(%s): %v", p, err)
	}
	return n
}

func (w *mbWorld) opWarm(m *mbMachine) string {
	var v *mbVersion
	var res *WarmResult
	var err error
	var what string
	before := -1
	if w.r.IntN(2) == 0 || len(m.handles) == 0 {
		p := w.anyPath()
		v = w.cur[p]
		before = w.flushEntries(m, p)
		what = fmt.Sprintf("Warm(%s v%d)", filepath.Base(p), v.id)
		res, err = m.c.Warm(w.ctx, p)
	} else {
		h := m.anyHandle()
		v = h.v
		if w.cur[v.path] == v {
			before = w.flushEntries(m, v.path)
		}
		what = fmt.Sprintf("Model(v%d).Warm", v.id)
		res, err = h.m.Warm(w.ctx, &WarmOptions{Parallel: 1 + w.r.IntN(3)})
	}
	w.disturb(m)
	if err != nil {
		if !(v.tainted && errors.Is(err, errs.ErrChanged)) {
			w.errf("%s: %v", what, err)
		}
		return what + ": " + err.Error()
	}
	if res.Tensors != len(v.names) || res.Written+res.Skipped != res.Tensors || res.LogicalBytes != v.bytes {
		w.errf("%s: %+v for %d tensors of %d bytes", what, res, len(v.names), v.bytes)
	}
	if before >= 0 {
		if res.Skipped != before {
			w.errf("%s: skipped %d tensors (written %d), but L2 held %d of the %d", what, res.Skipped, res.Written, before, res.Tensors)
		}
		if after := w.flushEntries(m, v.path); after != len(v.names) {
			w.errf("%s: L2 holds %d entries of the file after it, want %d", what, after, len(v.names))
		}
	}
	return fmt.Sprintf("%s: written %d, skipped %d", what, res.Written, res.Skipped)
}

func (w *mbWorld) opEvict(m *mbMachine) string {
	p := w.anyPath()
	flushed := w.r.IntN(2) == 0
	if flushed {
		m.c.Flush()
	}
	n, err := m.c.Evict(p)
	w.disturb(m)
	if err != nil {
		w.errf("Evict(%s): %v", p, err)
	}
	if flushed {
		if left, _, _, err := m.c.FileEntries(p); err != nil || left != 0 {
			w.errf("Evict(%s) after Flush: %d entries left (%v)", p, left, err)
		}
	}
	return fmt.Sprintf("Evict(%s, flushed %v): %d", filepath.Base(p), flushed, n)
}

func (w *mbWorld) opGC(m *mbMachine) string {
	err := m.c.GC()
	w.disturb(m)
	if err != nil {
		w.errf("GC: %v", err)
	}
	return "GC"
}

func (w *mbWorld) opFlush(m *mbMachine) string {
	m.c.Flush()
	return "Flush"
}

func (w *mbWorld) opReplace(m *mbMachine) string {
	p := w.anyPath()
	old := w.cur[p]
	var v *mbVersion
	fresh := w.r.IntN(2) == 0
	if fresh {
		v = w.layout(p)
	} else {
		v = w.changed(old)
	}
	w.install(v, false)
	w.disturb(w.ms...)
	return fmt.Sprintf("replace %s v%d by v%d (new layout %v)", filepath.Base(p), old.id, v.id, fresh)
}

func (w *mbWorld) opRewrite(m *mbMachine) string {
	p := w.anyPath()
	old := w.cur[p]
	v := w.changed(old)
	w.install(v, true)
	w.disturb(w.ms...)
	return fmt.Sprintf("rewrite %s v%d in place as v%d", filepath.Base(p), old.id, v.id)
}

func (w *mbWorld) opReopen(m *mbMachine) string {
	m.checkStats()
	w.flushErrs()
	s := m.c.Stats()
	m.life = m.life.plus(countsOf(s))
	m.dropsBase += s.WriteBehindDropped + s.WriteBehindErrors + s.L3.WriteDropped + s.L3.WriteErrors
	if err := m.c.Close(); err != nil {
		w.errf("Close: %v", err)
	}
	w.disturb(m)
	for _, h := range m.handles {
		if _, err := h.m.Tensor(w.ctx, "w0"); !errors.Is(err, errs.ErrClosed) {
			w.errf("Model.Tensor after the cache closed: %v, want ErrClosed", err)
		}
		if _, err := h.m.Load(w.ctx, nil, func(*Tensor) error { return nil }); !errors.Is(err, errs.ErrClosed) {
			w.errf("Model.Load after the cache closed: %v, want ErrClosed", err)
		}
		if _, err := h.m.OpenTensor(w.ctx, "w0"); !errors.Is(err, errs.ErrClosed) {
			w.errf("Model.OpenTensor after the cache closed: %v, want ErrClosed", err)
		}
		h.m.Close()
	}
	m.handles = nil
	if _, err := m.c.Get(w.ctx, m.nss[0], "k0", nil); !errors.Is(err, errs.ErrClosed) {
		w.errf("Get after Close: %v, want ErrClosed", err)
	}
	m.open()
	return "Close and Open"
}

func (w *mbWorld) opRedis(m *mbMachine) string {
	if !w.l3 {
		return "no L3"
	}
	if w.l3Up {
		w.srv.Kill()
		w.l3Up = false
		for _, m := range w.ms {
			m.l3Lost = true
		}
		return "kill Redis"
	}
	w.srv.Restart()
	w.l3Up = true
	return "restart Redis (empty)"
}

// ---- values

func (w *mbWorld) anyKey(m *mbMachine) (string, string) {
	return m.nss[w.r.IntN(len(m.nss))], fmt.Sprintf("k%d", w.r.IntN(6))
}

// newValue is bytes no other value has, now and then of several chunks.
func (w *mbWorld) newValue(m *mbMachine, ns, k string, dtype string) []byte {
	w.mu.Lock()
	w.fills++
	tag := fmt.Sprintf("%s|%s|%d|", ns, k, w.fills)
	w.mu.Unlock()
	n := w.data.IntN(3000)
	if w.data.IntN(10) == 0 {
		n = 8<<10 + w.data.IntN(24<<10)
	}
	b := append([]byte(tag), make([]byte, n)...)
	for i := len(tag); i < len(b); i++ {
		b[i] = byte(w.data.Uint32())
	}
	if dtype != "" && len(b)%2 == 1 {
		b = b[:len(b)-1]
	}
	return b
}

func (m *mbMachine) record(ns, k string, b []byte) {
	m.hist[ns+"/"+k] = append(m.hist[ns+"/"+k], b)
}

// checkFound checks a value found under ns/k; checkAbsent one not found.
func (w *mbWorld) checkFound(m *mbMachine, what, ns, k string, got []byte, dtype string) {
	e := m.vals[ns][k]
	if e == nil {
		w.errf("%s: found %d bytes (%.24q), but the value was deleted, dropped or never stored", what, len(got), got)
		return
	}
	for _, c := range e.cands {
		if bytes.Equal(c.data, got) {
			if c.dtype != dtype {
				w.errf("%s: dtype %q, want %q", what, dtype, c.dtype)
			}
			return
		}
	}
	w.errf("%s: %d bytes (%.24q), not the value stored (%d candidates, the first %.24q)", what, len(got), got, len(e.cands), e.cands[0].data)
}

func (w *mbWorld) mayBeAbsent(m *mbMachine, ns, k string) bool {
	e := m.vals[ns][k]
	return e == nil || e.absent || (e.soft && m.drops() > e.dropsAt)
}

func (w *mbWorld) opPut(m *mbMachine) string {
	ns, k := w.anyKey(m)
	var o *PutOptions
	dtype := ""
	if w.r.IntN(3) == 0 {
		dtype = "BF16"
		o = &PutOptions{DType: dtype}
	}
	b := w.newValue(m, ns, k, dtype)
	in := bytes.Clone(b)
	err := m.c.Put(w.ctx, ns, k, in, o)
	w.disturb(m)
	if err != nil {
		w.errf("Put(%s, %s): %v", ns, k, err)
		return "Put: " + err.Error()
	}
	for i := range in {
		in[i] = 0x5A // the cache keeps a copy
	}
	m.vals[ns][k] = &mbValue{cands: []mbBytes{{b, dtype}}}
	m.record(ns, k, b)
	return fmt.Sprintf("Put(%s, %s, %d bytes)", ns, k, len(b))
}

// fill reads ns/k with a fill, alone or with others at once (ran counts
// the fills that ran, under w.mu).
func (w *mbWorld) fill(m *mbMachine, ns, k string, together bool, ran *[]mbBytes, prepared []byte, dtype string) string {
	what := fmt.Sprintf("Get(%s, %s, fill)", ns, k)
	var o *PutOptions
	if dtype != "" {
		o = &PutOptions{DType: dtype}
	}
	var mine []byte
	v, err := m.c.GetWith(w.ctx, ns, k, o, func(context.Context) ([]byte, error) {
		b := bytes.Clone(prepared)
		w.mu.Lock()
		*ran = append(*ran, mbBytes{b, dtype})
		w.mu.Unlock()
		mine = b
		return b, nil
	})
	by := Fill
	if v != nil {
		by = v.ServedBy
	}
	m.valueServed(by, err)
	if err != nil {
		w.errf("%s: %v", what, err)
		return what + ": " + err.Error()
	}
	w.tiersOK(m, what, v.ServedBy, together, true)
	if mine != nil {
		if v.ServedBy != Fill || !bytes.Equal(v.Bytes(), mine) {
			w.errf("%s: its fill ran, but served by %v (%d bytes)", what, v.ServedBy, len(v.Bytes()))
		}
		if !together && !w.mayBeAbsent(m, ns, k) {
			w.errf("%s: the fill ran, but the value was stored (%.24q)", what, m.vals[ns][k].cands[0].data)
		}
		return what + ": filled"
	}
	if v.ServedBy == Fill {
		w.errf("%s: served by Fill, but its fill did not run", what)
	}
	if !together {
		w.checkFound(m, fmt.Sprintf("%s (served by %v)", what, v.ServedBy), ns, k, v.Bytes(), v.DType())
	} else {
		w.mu.Lock()
		found := false
		for _, c := range *ran {
			found = found || bytes.Equal(c.data, v.Bytes())
		}
		w.mu.Unlock()
		if !found {
			w.checkFound(m, fmt.Sprintf("%s (served by %v, reads at once)", what, v.ServedBy), ns, k, v.Bytes(), v.DType())
		}
	}
	return fmt.Sprintf("%s: %v", what, v.ServedBy)
}

// filled updates the reference after fills ran (drops: m.drops() before).
func (w *mbWorld) filled(m *mbMachine, ns, k string, ran []mbBytes, drops uint64) {
	if len(ran) == 0 {
		return
	}
	e := &mbValue{cands: ran, soft: true, dropsAt: drops}
	if old := m.vals[ns][k]; old != nil {
		// A write of the old value still queued for L3 may land after.
		e.cands = append(e.cands, old.cands...)
	}
	m.vals[ns][k] = e
	for _, r := range ran {
		m.record(ns, k, r.data)
	}
}

func (w *mbWorld) opFill(m *mbMachine) string {
	ns, k := w.anyKey(m)
	dtype := ""
	if w.r.IntN(4) == 0 {
		dtype = "BF16"
	}
	drops := m.drops()
	var ran []mbBytes
	s := w.fill(m, ns, k, false, &ran, w.newValue(m, ns, k, dtype), dtype)
	w.filled(m, ns, k, ran, drops)
	w.disturb(m)
	return s
}

// lookup checks Get(ns, k, nil) or OpenValue on m of a value of owner's
// (m's own: exactly; another machine's: one it ever stored, or none).
func (w *mbWorld) lookup(m, owner *mbMachine, ns, k string, open, together bool, ran *[]mbBytes, choose func(int) int) string {
	what := fmt.Sprintf("Get(%s, %s, nil)", ns, k)
	if open {
		what = fmt.Sprintf("OpenValue(%s, %s)", ns, k)
	}
	var got []byte
	var dtype string
	var by Tier
	var err error
	var r *ValueReader
	if open {
		r, err = m.c.OpenValue(w.ctx, ns, k)
		if r != nil {
			by = r.ServedBy
			dtype = r.DType
			var buf bytes.Buffer
			if _, werr := r.WriteTo(&buf); werr != nil {
				w.errf("%s: WriteTo: %v", what, werr)
			}
			got = buf.Bytes()
		}
	} else {
		var v *Value
		v, err = m.c.Get(w.ctx, ns, k, nil)
		if v != nil {
			by, got, dtype = v.ServedBy, v.Bytes(), v.DType()
		}
	}
	m.valueServed(by, err)
	switch {
	case errors.Is(err, errs.ErrNotFound):
		if owner == m && !together && !w.mayBeAbsent(m, ns, k) {
			w.errf("%s: not found, but the value was stored (%.24q)", what, m.vals[ns][k].cands[0].data)
		}
		if owner == m && m.vals[ns][k] != nil && !together {
			m.vals[ns][k].absent = true
		}
		return what + ": absent"
	case err != nil:
		w.errf("%s: %v", what, err)
		return what + ": " + err.Error()
	}
	w.tiersOK(m, what, by, together, true)
	if by == Fill {
		w.errf("%s: served by Fill without a fill", what)
	}
	what = fmt.Sprintf("%s (served by %v)", what, by)
	filledNow := false
	if ran != nil {
		w.mu.Lock()
		filledNow = slices.ContainsFunc(*ran, func(b mbBytes) bool { return bytes.Equal(b.data, got) })
		w.mu.Unlock()
	}
	if owner == m && !filledNow {
		w.checkFound(m, what, ns, k, got, dtype)
	} else if owner != m && !slices.ContainsFunc(owner.hist[ns+"/"+k], func(b []byte) bool { return bytes.Equal(b, got) }) {
		w.errf("%s: %d bytes (%.24q), never stored under that key", what, len(got), got)
	}
	if r != nil {
		w.readerChecks(what, r, got, func(error) bool { return false }, choose)
		if owner == m && !together && choose(3) == 0 && len(m.readers) < 3 {
			m.readers = append(m.readers, &mbReader{r: r, what: what, want: bytes.Clone(got)})
			return what + ", kept open"
		}
		r.Close()
	}
	return what
}

func (w *mbWorld) opGet(m *mbMachine) string {
	ns, k := w.anyKey(m)
	return w.lookup(m, m, ns, k, false, false, nil, w.r.IntN)
}

func (w *mbWorld) opOpenValue(m *mbMachine) string {
	ns, k := w.anyKey(m)
	return w.lookup(m, m, ns, k, true, false, nil, w.r.IntN)
}

func (w *mbWorld) opCross(m *mbMachine) string {
	other := w.ms[0]
	if other == m {
		other = w.ms[1]
	}
	ns, k := w.anyKey(other)
	return w.lookup(m, other, ns, k, w.r.IntN(2) == 0, false, nil, w.r.IntN)
}

func (w *mbWorld) opDelete(m *mbMachine) string {
	ns, k := w.anyKey(m)
	before := m.c.Stats().L3.Errors
	err := m.c.Delete(w.ctx, ns, k)
	w.disturb(m)
	if err != nil {
		w.errf("Delete(%s, %s): %v", ns, k, err)
	}
	old := m.vals[ns][k]
	if old != nil && m.c.Stats().L3.Errors > before {
		// L3 did not answer: its copy, if any, stays there.
		old.absent = true
		return fmt.Sprintf("Delete(%s, %s), L3 failed", ns, k)
	}
	delete(m.vals[ns], k)
	return fmt.Sprintf("Delete(%s, %s)", ns, k)
}

func (w *mbWorld) opDrop(m *mbMachine) string {
	ns := m.nss[w.r.IntN(len(m.nss))]
	err := m.c.DropNamespace(w.ctx, ns)
	w.disturb(m)
	if err != nil {
		if w.l3 && (m.l3Lost || !w.l3Up) && strings.Contains(err.Error(), "in L3") {
			return fmt.Sprintf("DropNamespace(%s): L3 down: %v", ns, err)
		}
		w.errf("DropNamespace(%s): %v", ns, err)
		return "DropNamespace: " + err.Error()
	}
	m.vals[ns] = map[string]*mbValue{}
	return fmt.Sprintf("DropNamespace(%s)", ns)
}

// ---- reads at once

// opTogether runs two to four reads at once of one tensor, one model or
// one value, on both machines, now and then with Redis killed meanwhile.
func (w *mbWorld) opTogether(m *mbMachine) string {
	p := w.anyPath()
	v := w.cur[p]
	name := w.anyName(v)
	var loads []*mbHandle
	for _, mm := range w.ms {
		for _, h := range mm.handles {
			if !h.v.tainted {
				loads = append(loads, h)
			}
		}
	}
	ns, k := w.anyKey(m)
	dtype := ""
	prepared := w.newValue(m, ns, k, dtype)
	drops := m.drops()
	absentOK := w.mayBeAbsent(m, ns, k)
	kill := w.l3 && w.l3Up && w.r.IntN(4) == 0
	n := 2 + w.r.IntN(3)
	type job struct {
		m    *mbMachine
		kind int
		seed uint64
	}
	var jobs []job
	for range n {
		jobs = append(jobs, job{w.ms[w.r.IntN(len(w.ms))], w.r.IntN(6), uint64(w.r.IntN(1 << 30))})
	}
	var ran []mbBytes
	var wg sync.WaitGroup
	var mu sync.Mutex
	var did []string
	for _, j := range jobs {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(j.seed, 3))
			var s string
			switch j.kind {
			case 0:
				what := fmt.Sprintf("Tensor(%s v%d, %s) on %s at once", filepath.Base(p), v.id, name, j.m.name)
				t, err := j.m.c.Tensor(w.ctx, p, name)
				w.checkTensor(j.m, what, v, name, t, err, true)
				s = what
			case 1:
				if len(loads) == 0 {
					s = "no handle"
					break
				}
				h := loads[r.IntN(len(loads))]
				hm := w.ms[0]
				if !slices.Contains(hm.handles, h) {
					hm = w.ms[1]
				}
				s = w.load(hm, h, false, true, r.IntN) + " on " + hm.name + " at once"
			case 2:
				s = w.openTensor(j.m, true, r.IntN) + " on " + j.m.name + " at once"
			case 3, 4:
				s = w.fill(m, ns, k, true, &ran, prepared, dtype) + " at once"
			case 5:
				s = w.lookup(m, m, ns, k, r.IntN(2) == 0, true, &ran, r.IntN) + " at once"
			}
			mu.Lock()
			did = append(did, s)
			mu.Unlock()
		})
	}
	if kill {
		for range w.r.IntN(200) {
			time.Sleep(0) // a yield, not a wait for anything
		}
		w.srv.Kill()
	}
	wg.Wait()
	if kill {
		w.l3Up = false
		for _, mm := range w.ms {
			mm.l3Lost = true
		}
		did = append(did, "Redis killed meanwhile")
	}
	if len(ran) > 1 && m.drops() == drops {
		w.errf("reads at once of %s/%s: the fill ran %d times", ns, k, len(ran))
	}
	if len(ran) > 0 && !absentOK {
		w.errf("reads at once of %s/%s: the fill ran, but the value was stored", ns, k)
	}
	w.filled(m, ns, k, ran, drops)
	for _, mm := range w.ms {
		w.disturb(mm)
	}
	return fmt.Sprintf("%d at once: %s", n, strings.Join(did, "; "))
}
