package tier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/key"
	"github.com/modelcache/modelcache/l2"
)

// Values are what a program computes and wants to keep: a model's outputs,
// its intermediate results, prepared inputs. They go through the same tiers
// as tensors (L1, then L2), under keys of their own kind (package key), in
// namespaces. A namespace is the unit of consistency and of dropping: its
// keys carry its epoch, so DropNamespace makes every value of it
// unreachable at once by moving to the next epoch, and reclaims the old
// entries in the background. NamespaceFor names a namespace after one
// version of a model, so that a new version never serves the old one's
// outputs.

// NamespaceOptions configures a namespace of values (Cache.SetNamespace).
type NamespaceOptions struct {
	// TTL is how long its values live unless a Put says otherwise; 0 means
	// Options.TTL.
	TTL time.Duration
	// MemoryBytes is the most L1 may hold of its values (charged as L1
	// charges), so that it cannot flush the rest of L1: past it, its own
	// oldest values leave L1 first. 0 means no share of its own.
	MemoryBytes int64
	// DiskBytes is the most its values may take in L2 (stored bytes):
	// past it, its own oldest-written values are removed. 0 means no share
	// of its own; the whole disk budget (Options.DiskBytes) still applies.
	DiskBytes int64
}

// PutOptions describes a value being stored.
type PutOptions struct {
	// TTL is how long it lives; 0 means the namespace's TTL. Negative means
	// it never expires.
	TTL time.Duration
	// DType and Shape describe the bytes as an array, little-endian and
	// row-major: with a float type (F32, F16, BF16, F64) L2 uses its
	// float-aware codec, which compresses trained values far better than
	// zstd alone. Empty means opaque bytes (zstd, or raw when that does not
	// pay).
	DType string
	Shape []uint64
}

// Value is a cached value. Its description is read through methods: a hit
// in L1 allocates this small struct only.
type Value struct {
	Namespace, Key string
	ServedBy       Tier // L1, L2, Fill (this call's fill), Shared (another caller's)
	v              *l1Value
}

// Bytes returns the value's bytes. They are shared with the cache and with
// every other reader of this value: writing to them corrupts what all of
// them see. Copy before modifying.
func (v *Value) Bytes() []byte { return v.v.data }

// DType is the element type it was stored with (PutOptions), if any.
func (v *Value) DType() string { return v.v.dtype }

// Shape is the shape it was stored with, if any; shared, do not modify.
func (v *Value) Shape() []uint64 { return v.v.shape }

// Stored is when it was stored.
func (v *Value) Stored() time.Time { return time.Unix(0, v.v.stored) }

// Expires is when it expires; zero: never.
func (v *Value) Expires() time.Time {
	if v.v.expires == 0 {
		return time.Time{}
	}
	return time.Unix(0, v.v.expires)
}

// FillFunc computes a value that is not cached. Its context is cancelled
// when the cache closes; it runs once for all the callers that asked for
// the key at once, and its result is shared with them, so a caller giving up
// (its own context cancelled) does not stop it.
type FillFunc func(ctx context.Context) ([]byte, error)

// NamespaceFor names the namespace of the values computed by one version
// of model m: name, "@", and m.Version() (the file's identity, its content
// digest with Options.ContentDigest, or a digest of a checkpoint's shards).
// When the model's files change, so does the namespace, and the values
// computed by the old version are never served for the new one. The
// version is ASCII: the name is checked, as every namespace is, where it is
// used (errs.ErrInvalidArgument unless valid UTF-8 without control
// characters, of at most 256 bytes in all).
func NamespaceFor(m *Model, name string) string { return name + "@" + m.Version() }

// nsState is one namespace's epoch, options and meter.
type nsState struct {
	name   string
	owner  string // key.OwnerOf: its L1 group
	prefix atomic.Pointer[string]
	epoch  atomic.Uint64
	opts   atomic.Pointer[NamespaceOptions]
	// meter is its own (Options.MaxNamespaceMeters namespaces have one) or
	// the one the others share; unmetered counts its requests while it is
	// the shared one (nsMeters.promote).
	meter     atomic.Pointer[meter]
	unmetered atomic.Uint64
	// transient: made for one lookup of a namespace no state is kept for;
	// it is in no map and holds nothing (Cache.keep).
	transient bool

	// shareMu serializes dropping, and the enforcement of DiskBytes;
	// disk is what its entries took in L2 when last counted plus what was
	// written since (-1: not counted yet).
	shareMu sync.Mutex
	disk    int64
}

func (st *nsState) key(k string) string { return *st.prefix.Load() + k }

func (st *nsState) setEpoch(e uint64) {
	p := key.Values(st.name, e).Prefix()
	st.prefix.Store(&p)
	st.epoch.Store(e)
}

// epochRecord names the record of a namespace's epoch in L2.
const epochRecord = "nsepoch\x00"

// namespace returns the state of namespace ns, kept from then on, after
// checking that ns and k can name a value. Only what configures or stores
// a namespace keeps its state; a lookup calls lookupNamespace, and keeps
// the state only once it finds a value.
func (c *Cache) namespace(ns, k string) (*nsState, error) {
	st, err := c.lookupNamespace(ns, k)
	if err != nil {
		return nil, err
	}
	return c.keep(st), nil
}

// lookupNamespace returns the kept state of namespace ns or, if none is
// kept, a transient one (its epoch read anew), after checking that ns and k
// can name a value: a lookup in a namespace that holds nothing leaves
// nothing behind, however many namespaces a client makes up. (One that L2's
// lifetime counters measure by name, at most MaxNamespaceMeters, is kept.)
func (c *Cache) lookupNamespace(ns, k string) (*nsState, error) {
	if st, ok := c.namespaces.Load(ns); ok {
		if len(k) > key.MaxValueKey {
			return nil, key.CheckValue(ns, k)
		}
		return st.(*nsState), nil
	}
	if err := key.CheckValue(ns, k); err != nil {
		return nil, err
	}
	st, err := c.loadNamespace(ns)
	if err == nil && c.knownNamespace(ns) {
		st = c.keep(st)
	}
	return st, err
}

// storedNamespace is the state of a namespace that L2 holds values of:
// kept, unless its name is one no entry point accepts now (an older
// build's), whose values must still be listed and collected but which no
// request may find kept.
func (c *Cache) storedNamespace(ns string) (*nsState, error) {
	if st, ok := c.namespaces.Load(ns); ok {
		return st.(*nsState), nil
	}
	st, err := c.loadNamespace(ns)
	if err != nil || key.CheckNamespace(ns) != nil {
		return st, err
	}
	return c.keep(st), nil
}

// keep keeps st, if transient, as its namespace's state and returns the
// state kept (another caller's, should one have kept it first). A kept
// state gets a meter of its own while fewer than MaxNamespaceMeters have
// one.
func (c *Cache) keep(st *nsState) *nsState {
	if !st.transient {
		return st
	}
	k := newNSState(st.name, st.epoch.Load(), false)
	k.meter.Store(&c.nsm.other)
	actual, loaded := c.namespaces.LoadOrStore(st.name, k)
	if !loaded {
		c.nsm.assign(k)
	}
	return actual.(*nsState)
}

// found keeps st, a namespace a request found a value in (or stored one),
// and counts the request in the meter of the state kept.
func (c *Cache) found(req *request, st *nsState) {
	if !st.transient {
		return
	}
	k := c.keep(st)
	if req.m != nil {
		req.m = c.meterOf(k)
	}
}

func newNSState(ns string, epoch uint64, transient bool) *nsState {
	st := &nsState{name: ns, owner: key.OwnerOf(key.Value, ns), disk: -1, transient: transient}
	st.opts.Store(&NamespaceOptions{})
	st.setEpoch(epoch)
	return st
}

// loadNamespace is a transient state of namespace ns at its epoch, as L2
// and L3 keep it, counted in the shared meter.
func (c *Cache) loadNamespace(ns string) (*nsState, error) {
	var epoch uint64
	if c.l2 != nil {
		name := epochRecord + ns
		recs, err := c.rec.Get(name)
		if err != nil {
			return nil, err
		}
		if raw, ok := recs[name]; ok {
			if epoch, err = strconv.ParseUint(string(raw), 10, 64); err != nil {
				return nil, fmt.Errorf("tier: namespace %s: %w: epoch record %.20q", errs.Quote(ns), errs.ErrCorrupt, raw)
			}
		}
	}
	if c.l3 != nil {
		if e, err := c.fleetEpoch(ns); err == nil {
			epoch = max(epoch, e)
		}
	}
	st := newNSState(ns, epoch, true)
	st.meter.Store(&c.nsm.other)
	return st, nil
}

// epochRefresh bounds how long a namespace dropped on another machine is
// still served here: each process reads the fleet's epochs this often.
const epochRefresh = time.Second

// followEpochs moves every namespace in use to the fleet's epoch, every
// epochRefresh, until Close.
func (c *Cache) followEpochs() {
	t := time.NewTicker(epochRefresh)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		if c.enter() != nil {
			return
		}
		c.namespaces.Range(func(_, v any) bool {
			st := v.(*nsState)
			e, err := c.fleetEpoch(st.name)
			if err != nil {
				// Not answering: next round. Malformed: the next one.
				return errors.Is(err, errs.ErrCorrupt)
			}
			st.shareMu.Lock()
			if e > st.epoch.Load() {
				if c.l2 != nil {
					_ = c.rec.Set(epochRecord+st.name, []byte(strconv.FormatUint(e, 10)))
				}
				st.setEpoch(e)
				st.disk = -1
				st.shareMu.Unlock()
				c.l1.DeleteGroup(st.owner)
				return true
			}
			st.shareMu.Unlock()
			return true
		})
		c.exit()
	}
}

// SetNamespace configures namespace ns; it applies to the values stored
// from then on (and, for MemoryBytes, to L1 at once).
func (c *Cache) SetNamespace(ns string, o NamespaceOptions) error {
	if o.TTL < 0 || o.MemoryBytes < 0 || o.DiskBytes < 0 {
		return fmt.Errorf("tier: namespace %s: %w: negative option", errs.Quote(ns), errs.ErrInvalidArgument)
	}
	st, err := c.namespace(ns, "")
	if err != nil {
		return err
	}
	st.opts.Store(&o)
	return nil
}

// namespaceShare is L1's GroupLimit: a namespace's MemoryBytes.
func (c *Cache) namespaceShare(owner string) int64 {
	ns, ok := key.NamespaceOf(owner)
	if !ok {
		return 0
	}
	if st, ok := c.namespaces.Load(ns); ok {
		return st.(*nsState).opts.Load().MemoryBytes
	}
	return 0
}

// ttlOf is how long a value put with o in st lives; 0 means forever.
func (c *Cache) ttlOf(st *nsState, o *PutOptions) time.Duration {
	ttl := time.Duration(0)
	if o != nil {
		ttl = o.TTL
	}
	if ttl == 0 {
		ttl = st.opts.Load().TTL
	}
	if ttl == 0 {
		ttl = c.ttl
	}
	return max(ttl, 0)
}

// Get returns the value under key k of namespace ns, from the fastest tier
// that has it; on a miss it calls fill, once for every caller asking for
// the key at once, stores what fill returns and returns it (ServedBy Fill to
// the caller whose fill ran, Shared to the others). An error from fill is
// returned, and nothing is cached. With fill nil, a miss is errs.ErrNotFound.
func (c *Cache) Get(ctx context.Context, ns, k string, fill FillFunc) (*Value, error) {
	return c.GetWith(ctx, ns, k, nil, fill)
}

// GetWith is Get that stores what fill returns as o describes.
func (c *Cache) GetWith(ctx context.Context, ns, k string, o *PutOptions, fill FillFunc) (v *Value, err error) {
	// An L1 hit in a namespace in use takes no lock: the loads below count
	// as operations for Close on their own (flight).
	if c.shut.Load() {
		return nil, fmt.Errorf("tier: %w", errs.ErrClosed)
	}
	var st *nsState
	if s, ok := c.namespaces.Load(ns); ok && len(k) <= key.MaxValueKey {
		st = s.(*nsState)
	} else {
		if err := c.enter(); err != nil {
			return nil, err
		}
		if fill != nil {
			st, err = c.namespace(ns, k) // it will hold what fill returns
		} else {
			st, err = c.lookupNamespace(ns, k)
		}
		c.exit()
		if err != nil {
			c.values.failed.Add(1)
			return nil, err
		}
	}
	req := c.begin(c.meterOf(st))
	ek := st.key(k)
	if lv, ok := c.l1.Get(ek); ok && !c.expired(lv) {
		req.hit() // not deferred: a defer costs a hit 2%
		return lv.value(ns, k, L1), nil
	}
	return c.getMiss(ctx, &req, st, ek, k, o, fill)
}

// getMiss is GetWith past L1: the walk.
func (c *Cache) getMiss(ctx context.Context, req *request, st *nsState, ek, k string, o *PutOptions, fill FillFunc) (v *Value, err error) {
	defer func() {
		by := Fill
		if v != nil {
			by = v.ServedBy
		}
		req.end(by, err)
	}()
	f, err := c.walk(ctx, req, &read{key: ek, name: k, ns: st, fill: fill, opts: o, wait: true, keep: true, detach: true})
	if err != nil {
		return nil, err
	}
	c.found(req, st)
	return f.v.value(st.name, k, f.by), nil
}

func (c *Cache) expired(v *l1Value) bool {
	return v.expires != 0 && c.now().UnixNano() >= v.expires
}

func (v *l1Value) value(ns, k string, by Tier) *Value {
	return &Value{Namespace: ns, Key: k, ServedBy: by, v: v}
}

// storedValue is what L1 holds of a value a lower tier had: stored at
// written, expiring at expires (zero: never).
func storedValue(dtype string, shape []uint64, data []byte, written, expires time.Time) *l1Value {
	lv := &l1Value{dtype: dtype, shape: shape, data: data, stored: written.UnixNano()}
	if !expires.IsZero() {
		lv.expires = expires.UnixNano()
	}
	return lv
}

// queueValue has lv written to L2 in the background (if there is an L2),
// to live for ttl, within its namespace's share.
func (c *Cache) queueValue(st *nsState, ek string, lv *l1Value, ttl time.Duration) {
	if c.l2 == nil {
		return
	}
	c.wb.add(&wbJob{key: ek, dtype: lv.dtype, shape: lv.shape, data: lv.data, put: func() error {
		return c.putValue(st, ek, lv, ttl)
	}})
}

// newValue is what L1 holds of data stored now with o.
func (c *Cache) newValue(st *nsState, data []byte, o *PutOptions) *l1Value {
	now := c.now()
	lv := &l1Value{data: data, stored: now.UnixNano()}
	if o != nil {
		lv.dtype, lv.shape = o.DType, slices.Clone(o.Shape)
	}
	if ttl := c.ttlOf(st, o); ttl > 0 {
		lv.expires = now.Add(ttl).UnixNano()
	}
	return lv
}

// putValue writes a value to L2, a stream past StreamAbove, then holds its
// namespace to its disk share.
func (c *Cache) putValue(st *nsState, ek string, lv *l1Value, ttl time.Duration) error {
	var err error
	if len(lv.data) > StreamAbove {
		err = c.l2.PutStreamTTL(ek, lv.dtype, lv.shape, uint64(len(lv.data)), bytes.NewReader(lv.data), ttl)
	} else {
		err = c.l2.PutTTL(ek, lv.dtype, lv.shape, lv.data, ttl)
	}
	if err != nil {
		return err
	}
	return c.holdShare(st, ek)
}

// Put stores b under key k of namespace ns, replacing what was there, in
// L1 and (before it returns) in L2. The cache keeps a copy of b.
func (c *Cache) Put(ctx context.Context, ns, k string, b []byte, o *PutOptions) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	st, err := c.putTarget(ctx, ns, k, int64(len(b)), o)
	if err != nil {
		return err
	}
	ek := st.key(k)
	lv := c.newValue(st, bytes.Clone(b), o)
	if lv.data == nil {
		lv.data = []byte{}
	}
	if c.l2 != nil {
		c.wb.settle(ek)
		if err := c.putValue(st, ek, lv, c.ttlOf(st, o)); err != nil {
			c.l1.Delete(ek)
			return err
		}
	}
	c.keepL1(ek, lv)
	if c.l3 != nil {
		c.l3wb.settle(ek)
		c.putL3Now(ek, lv.dtype, lv.shape, lv.data, c.ttlOf(st, o))
	}
	return nil
}

// putTarget is the namespace a put of n bytes under k goes to, once the
// context, the names and the array's shape are checked.
func (c *Cache) putTarget(ctx context.Context, ns, k string, n int64, o *PutOptions) (*nsState, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := c.lookupNamespace(ns, k)
	if err != nil {
		return nil, err
	}
	if o != nil && o.DType != "" {
		if err := checkArray(o, n); err != nil {
			return nil, fmt.Errorf("tier: namespace %s: value %s: %w", errs.Quote(ns), errs.Quote(k), err)
		}
	}
	return c.keep(st), nil
}

// checkArray checks that an array's dtype is known, that n bytes are a
// whole number of its elements and that its shape, if given, covers them.
func checkArray(o *PutOptions, n int64) error {
	w := dtypeWidth(o.DType)
	if w == 0 {
		return fmt.Errorf("%w: dtype %s is not one of F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL", errs.ErrInvalidArgument, errs.Quote(o.DType))
	}
	if n%int64(w) != 0 {
		return fmt.Errorf("%w: %d bytes are not a whole number of %s elements (%d bytes each)", errs.ErrInvalidArgument, n, o.DType, w)
	}
	if len(o.Shape) == 0 {
		return nil
	}
	elems := uint64(1)
	for _, d := range o.Shape {
		if d != 0 && elems > (1<<62)/d {
			return fmt.Errorf("%w: shape %v overflows", errs.ErrInvalidArgument, o.Shape)
		}
		elems *= d
	}
	if elems*uint64(w) != uint64(n) {
		return fmt.Errorf("%w: shape %v of %s is %d bytes, not %d", errs.ErrInvalidArgument, o.Shape, o.DType, elems*uint64(w), n)
	}
	return nil
}

// dtypeWidth is the width in bytes of the element types (safetensors'); 0
// for others.
func dtypeWidth(dtype string) int {
	switch dtype {
	case "F64", "I64", "U64":
		return 8
	case "F32", "I32", "U32":
		return 4
	case "F16", "BF16", "I16", "U16":
		return 2
	case "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2":
		return 1
	}
	return 0
}

// Delete removes the value under key k of namespace ns from every tier.
func (c *Cache) Delete(ctx context.Context, ns, k string) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	st, err := c.lookupNamespace(ns, k)
	if err != nil {
		return err
	}
	ek := st.key(k)
	c.l1.Delete(ek)
	if c.l3 != nil {
		c.l3wb.settle(ek)
		if err := c.l3.Delete(ctx, ek); err != nil {
			c.fleet.errors.Add(1)
		}
	}
	if c.l2 == nil {
		return nil
	}
	c.wb.settle(ek)
	return c.l2.Delete(ek)
}

// DropNamespace makes every value of namespace ns unreachable at once, in
// O(1): the namespace moves to its next epoch (kept in L2, so it holds
// across restarts), L1 lets go of its values, and the old entries are
// removed from L2 in the background (and by GC, should Close stop that). A
// Get already running may still store its fill, under the old epoch, where
// no one will read it.
func (c *Cache) DropNamespace(ctx context.Context, ns string) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	st, err := c.namespace(ns, "")
	if err != nil {
		return err
	}
	st.shareMu.Lock()
	next := st.epoch.Load() + 1
	if c.l3 != nil {
		// The fleet's epoch: every machine moves to it within
		// epochRefresh.
		e, err := c.l3.RaiseEpoch(ctx, ns, next)
		if err != nil {
			st.shareMu.Unlock()
			return fmt.Errorf("tier: dropping namespace %s in L3: %w", errs.Quote(ns), err)
		}
		next = e
	}
	if c.l2 != nil {
		if err := c.rec.Set(epochRecord+ns, []byte(strconv.FormatUint(next, 10))); err != nil {
			st.shareMu.Unlock()
			return err
		}
	}
	st.setEpoch(next)
	st.disk = -1
	st.shareMu.Unlock()
	c.l1.DeleteGroup(st.owner)
	if c.l2 != nil && c.enter() == nil {
		go func() {
			defer c.exit()
			if _, err := c.sweepEpochs(st); err != nil && !errors.Is(err, errs.ErrClosed) {
				c.warn.Warn("tier: removing the values of a dropped namespace failed; GC will", "namespace", ns, "err", err)
			}
		}()
	}
	return nil
}

// sweepEpochs removes the L2 entries of st's older epochs.
func (c *Cache) sweepEpochs(st *nsState) (int, error) {
	current := st.epoch.Load()
	return c.removeVersions(key.Value, st.name, func(g key.Group) bool {
		e, ok := g.Epoch()
		return !ok || e < current
	})
}

// holdShare removes st's oldest-written values from L2 until they take at
// most its DiskBytes, once they take more; ek was just written.
func (c *Cache) holdShare(st *nsState, ek string) error {
	limit := st.opts.Load().DiskBytes
	if limit <= 0 {
		return nil
	}
	st.shareMu.Lock()
	defer st.shareMu.Unlock()
	if st.disk >= 0 {
		if info, err := c.l2.Stat(ek); err == nil {
			st.disk += int64(info.StoredBytes)
		}
		if st.disk <= limit {
			return nil
		}
	}
	// Count anew (the disk budget and TTLs remove entries without telling
	// us), then remove the oldest down to 90% of the share, so that the
	// next count is many puts away.
	var es []*l2.EntryInfo
	var total int64
	if err := c.l2.Range(*st.prefix.Load(), func(e *l2.EntryInfo) bool {
		es = append(es, e)
		total += int64(e.StoredBytes)
		return true
	}); err != nil {
		return err
	}
	if total > limit {
		slices.SortFunc(es, func(a, b *l2.EntryInfo) int { return a.Written.Compare(b.Written) })
		var doomed []string
		for _, e := range es {
			if total <= limit*9/10 {
				break
			}
			doomed = append(doomed, e.Key)
			total -= int64(e.StoredBytes)
		}
		for _, k := range doomed {
			c.l1.Delete(k)
		}
		if err := c.l2.Delete(doomed...); err != nil {
			st.disk = -1
			return err
		}
	}
	st.disk = total
	return nil
}

// CachedValue describes one value held in L2.
type CachedValue struct {
	Namespace, Key string
	DType          string
	Shape          []uint64
	LogicalBytes   uint64
	StoredBytes    uint64
	Written        time.Time
	Expires        time.Time // zero: never
}

// Values calls fn for every value of namespace ns (every namespace if ns is
// empty) held in L2, in key order, until fn returns false. Values of
// dropped epochs are not listed.
func (c *Cache) Values(ns string, fn func(*CachedValue) bool) error {
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	if c.l2 == nil {
		return nil
	}
	prefix := key.AllValues
	if ns != "" {
		st, err := c.lookupNamespace(ns, "")
		if err != nil {
			return err
		}
		prefix = *st.prefix.Load()
	}
	var rangeErr error
	err := c.l2.Range(prefix, func(e *l2.EntryInfo) bool {
		g, k, ok := key.Parse(e.Key)
		if !ok || g.Kind != key.Value {
			return true
		}
		st, err := c.storedNamespace(g.Head)
		if err != nil {
			rangeErr = err
			return false
		}
		if epoch, _ := g.Epoch(); epoch != st.epoch.Load() {
			return true
		}
		return fn(&CachedValue{Namespace: g.Head, Key: k, DType: e.DType, Shape: e.Shape,
			LogicalBytes: e.LogicalBytes, StoredBytes: e.StoredBytes, Written: e.Written, Expires: e.Expires})
	})
	return errors.Join(err, rangeErr)
}

// gcValues removes the entries of dropped epochs of every namespace.
func (c *Cache) gcValues() error {
	seen := map[string]bool{}
	if err := c.l2.Range(key.AllValues, func(e *l2.EntryInfo) bool {
		if g, _, ok := key.Parse(e.Key); ok {
			seen[g.Head] = true
		}
		return true
	}); err != nil {
		return err
	}
	for ns := range seen {
		st, err := c.storedNamespace(ns)
		if err != nil {
			return err
		}
		if _, err := c.sweepEpochs(st); err != nil {
			return err
		}
	}
	return nil
}

// ValueReader reads a value piecewise, as TensorReader reads a tensor (it
// is one: Name is the value's key): from L1, or from L2 a chunk at a time,
// so that a value of many gigabytes is never in memory whole.
type ValueReader = TensorReader

// OpenValue opens the value under key k of namespace ns for reading
// piecewise; a value not cached is errs.ErrNotFound. Close the reader.
func (c *Cache) OpenValue(ctx context.Context, ns, k string) (r *ValueReader, err error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.exit()
	st, err := c.lookupNamespace(ns, k)
	if err != nil {
		c.values.failed.Add(1)
		return nil, err
	}
	req := c.begin(c.meterOf(st))
	defer func() {
		by := L2
		if r != nil {
			by = r.ServedBy
		}
		req.end(by, err)
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ek := st.key(k)
	if lv, ok := c.l1.Get(ek); ok && !c.expired(lv) {
		// The hot path, without a walk: an L1 hit.
		return &ValueReader{Name: k, DType: lv.dtype, Shape: lv.shape, ServedBy: L1, c: c, key: ek, size: int64(len(lv.data)), data: lv.data, chunk: -1}, nil
	}
	wreq := req // a copy: req stays on the stack for the L1 hit above
	f, err := c.walk(ctx, &wreq, &read{key: ek, name: k, ns: st, sink: toStream, wait: true, keep: true})
	req = wreq
	if err != nil {
		return nil, err
	}
	c.found(&req, st)
	if f.entry != nil {
		h := f.entry.Header()
		return &ValueReader{Name: k, DType: h.DType, Shape: h.Shape, ServedBy: f.by, c: c, key: ek, size: int64(h.Length), entry: f.entry, chunk: -1}, nil
	}
	return &ValueReader{Name: k, DType: f.v.dtype, Shape: f.v.shape, ServedBy: f.by, c: c, key: ek, size: int64(len(f.v.data)), data: f.v.data, chunk: -1}, nil
}

// PutReader stores the size bytes r yields as the value under key k of
// namespace ns, chunk by chunk, never holding it whole: for values too
// large for memory. Without L2 it reads r whole into L1. The value is not
// kept in L1; it is in L2 when PutReader returns.
func (c *Cache) PutReader(ctx context.Context, ns, k string, r io.Reader, size int64, o *PutOptions) error {
	if size < 0 {
		return fmt.Errorf("tier: %w: negative size", errs.ErrInvalidArgument)
	}
	if err := key.CheckValue(ns, k); err != nil {
		return err // before anything is read or allocated
	}
	if c.l2 == nil {
		b := make([]byte, size)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		return c.Put(ctx, ns, k, b, o)
	}
	if err := c.enter(); err != nil {
		return err
	}
	defer c.exit()
	st, err := c.putTarget(ctx, ns, k, size, o)
	if err != nil {
		return err
	}
	ek := st.key(k)
	lv := c.newValue(st, nil, o)
	c.wb.settle(ek)
	c.l1.Delete(ek)
	if err := c.l2.PutStreamTTL(ek, lv.dtype, lv.shape, uint64(size), ctxReader{ctx, r}, c.ttlOf(st, o)); err != nil {
		return err
	}
	return c.holdShare(st, ek)
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
