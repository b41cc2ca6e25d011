package tier

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/l3"
	"github.com/modelcache/modelcache/loader"
)

// The read walk. Every read of an entry, a tensor or a value, whatever the
// caller wants its bytes for, is one call of walk: L1 and the write-behind
// queue, then (once per key at a time in this process: the flight) L2, L3
// with the fleet's lease, and the source (a tensor's file) or the fill (a
// value's). What a lower tier had is promoted up on the way. The public
// calls (Cache.Tensor, Model.Tensor, Model.Load's workers, OpenTensor,
// Warm, Get, OpenValue) are adapters that say what they want in a read
// and turn the found into their result; so one load, one lease and one
// way of counting hold on every path.

// sink is where a read's bytes go.
type sink uint8

const (
	// toBytes: bytes in memory, the cache's (shared with L1: an L1 hit
	// copies nothing) or, with LoadOptions.Into (read.ld), the caller's buffer.
	toBytes sink = iota
	// toStream: a reader over the entry (TensorReader): an L2 entry
	// decoded a chunk at a time, or the source read as it goes. What L1
	// or L3 has is in memory anyway and is read from there.
	toStream
	// toL2: the entry stored in L2 before the walk returns (Warm); L1 is
	// neither read nor filled.
	toL2
)

// read is one read of an entry: which, where its bytes go and what the
// caller wants.
type read struct {
	key   string
	where string // for messages: the model file (a value's: its namespace)
	name  string // the tensor's name, or the value's key
	sink  sink
	// ld, if set, is the Load this read is tensor i of: its
	// LoadOptions.Into gives the caller's buffer for the bytes (toBytes),
	// asked once per read (a tier that fails to fill it leaves it to the
	// next); without Into the cache allocates. Tensors read from the
	// source whose L2 write cannot be queued (the caller's buffer, or a
	// full queue) are left to the load, which writes them after it
	// finishes, read again from the file.
	ld *loading
	i  int
	// detach: a load into the cache's bytes outlives a caller that gives
	// up (the next caller finds what it read). Callers that wait for every
	// read of theirs anyway (Load, Warm) read on their own goroutine.
	detach bool
	// wait for another machine's read of the entry from the origin; if
	// false, such an entry is errFleetBusy (Load takes the next tensor).
	wait bool
	// keep in L1 what a lower tier had.
	keep bool
	// lookup: L3 is looked in without a lease or a wait, and not written
	// (the writes Load leaves for after it: L3 has what the load wrote
	// there, and the file is at hand).
	lookup bool
	// afterClose: Close waits for this read instead of cancelling it.
	afterClose bool

	// A tensor: its file (nil: opened at version id on a miss).
	file ModelFile
	id   loader.Identity
	// A value: its namespace and the fill of a miss (nil: a lookup, which
	// takes no lease and is absent on a miss).
	ns   *nsState
	fill FillFunc
	opts *PutOptions

	asked  bool
	buf    []byte
	bufErr error
}

// buffer returns n bytes for the entry: the caller's (asked once), or new.
func (r *read) buffer(n uint64) ([]byte, error) {
	if !r.owned() {
		return make([]byte, n), nil
	}
	if !r.asked {
		r.asked = true
		r.buf, r.bufErr = r.ld.into(&r.ld.m.tensors[r.i])
	}
	return r.buf, r.bufErr
}

// place names where the entry is, for messages.
func (r *read) place() string {
	if r.ns != nil {
		return "namespace " + r.ns.name
	}
	return r.where
}

// alloc is buffer as the tiers ask for it; err remembers the caller's
// failure, which ends the read (a tier's own is a miss).
func (r *read) alloc(err *error) func(string, []uint64, uint64) ([]byte, error) {
	if !r.owned() {
		return nil
	}
	return func(_ string, _ []uint64, n uint64) ([]byte, error) {
		b, e := r.buffer(n)
		*err = e
		return b, e
	}
}

// owned says that bytes read for r are the caller's, not the cache's.
func (r *read) owned() bool { return r.ld != nil && r.ld.opts.Into != nil }

// found is what a walk found.
type found struct {
	by Tier
	// v holds the bytes (toBytes, and toStream from L1 or L3): the
	// caller's own buffer when the read is owned.
	v *l1Value
	// toStream: an L2 entry, or the source file held open (release).
	entry   *l2.EntryReader
	file    ModelFile
	release func()
	// toL2: the entry was written by this read.
	stored bool
}

// walk reads r from the fastest tier that has it.
func (c *Cache) walk(ctx context.Context, req *request, r *read) (found, error) {
	if r.sink != toL2 {
		if v, queued, ok := c.inRAM(r.key); ok && !c.expired(v) {
			if queued && r.keep {
				c.keepL1(r.key, v)
			}
			return c.inMemory(r, v, L1)
		}
	}
	req.missed()
	switch r.sink {
	case toStream:
		if c.l2 != nil {
			e, err := c.l2.OpenEntry(r.key)
			if err == nil {
				return found{by: L2, entry: e}, nil
			}
			if err := c.l2Failed(req, err, r.place(), r.name); err != nil {
				return found{}, err
			}
		}
		if r.ns == nil && c.l3 == nil {
			return c.openSource(r) // nothing below L2 but the file
		}
	case toL2:
		if _, err := c.l2.Stat(r.key); err == nil {
			return found{by: L2}, nil
		}
	}
	f, err := c.shared(ctx, req, r)
	if err == nil && r.sink == toStream && f.v == nil {
		return c.openSource(r)
	}
	return f, err
}

// inMemory is what a read gets of bytes in memory (L1's, or a shared
// load's): the caller's buffer filled with them, when the read is owned.
func (c *Cache) inMemory(r *read, v *l1Value, by Tier) (found, error) {
	if r.sink != toBytes || !r.owned() {
		return found{by: by, v: v}, nil
	}
	b, err := r.buffer(uint64(len(v.data)))
	if err != nil {
		return found{}, err
	}
	copy(b, v.data)
	cv := *v
	cv.data = b
	return found{by: by, v: &cv}, nil
}

// openSource holds the tensor's file open for a reader (toStream).
func (c *Cache) openSource(r *read) (found, error) {
	id := r.id
	if r.file != nil {
		id = r.file.Identity()
	}
	f, release, err := c.acquire(id)
	if err != nil {
		return found{}, err
	}
	return found{by: Source, file: f, release: release}, nil
}

// flights are the reads below L1 in progress, by sink and key: one load
// per entry at a time, which callers asking for it meanwhile share.
type flights struct {
	mu sync.Mutex
	m  map[flightID]*flight
}

type flight struct {
	done      chan struct{}
	followers int
	f         found // with v the cache's own bytes
	err       error
}

// join makes the caller the leader of key's flight, or a follower of the
// one in progress.
func (g *flights) join(key flightID) (fl *flight, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if fl, ok := g.m[key]; ok {
		fl.followers++
		return fl, false
	}
	if g.m == nil {
		g.m = map[flightID]*flight{}
	}
	fl = &flight{done: make(chan struct{})}
	g.m[key] = fl
	return fl, true
}

// land ends a flight with its leader's result. Bytes that are the
// leader's caller's are copied once for the followers, if any: the caller
// owns its buffer from the moment its read returns.
func (g *flights) land(key flightID, fl *flight, f found, err error, owned bool) {
	g.mu.Lock()
	delete(g.m, key)
	n := fl.followers
	g.mu.Unlock()
	if err == nil && f.v != nil && owned && n > 0 {
		cv := *f.v
		cv.data = append([]byte(nil), f.v.data...)
		f = found{by: f.by, v: &cv}
	}
	fl.f, fl.err = f, err
	close(fl.done)
}

// flightID is the flight of a read: reads to one sink share a load (a
// stream cannot share another caller's open entry, nor Warm a load that
// only queues its L2 write).
type flightID struct {
	sink sink
	key  string
}

// maxFollows bounds how many times a caller follows a flight whose leader
// gave up (its context ended, or it set the entry aside for another
// machine's read) before it reads alone.
const maxFollows = 4

// shared reads r below L1, in one flight with every caller asking for it
// at once. A load into the cache's own bytes outlives a caller that gives
// up (the next caller finds what it read); a load into the caller's
// buffer runs on the caller's goroutine, so that the buffer is never
// written after the read returns, and a follower whose leader gave up
// tries again.
func (c *Cache) shared(ctx context.Context, req *request, r *read) (found, error) {
	key := flightID{r.sink, r.key}
	for range maxFollows {
		fl, leader := c.reads.join(key)
		if leader && (!r.detach || r.owned() || r.afterClose) {
			f, err := c.below(ctx, req, r)
			c.reads.land(key, fl, f, err, r.owned())
			return f, err
		}
		if leader {
			go func() {
				// An operation of its own for Close.
				err := c.enter()
				var f found
				if err == nil {
					// Not the caller's context: Close's.
					dctx, stop := context.WithCancelCause(context.WithoutCancel(ctx))
					defer context.AfterFunc(c.ctx, func() { stop(fmt.Errorf("tier: %w", errs.ErrClosed)) })()
					f, err = c.below(dctx, req, r)
					stop(nil)
					c.exit()
				}
				c.reads.land(key, fl, f, err, false)
			}()
		}
		select {
		case <-fl.done:
		case <-ctx.Done():
			return found{}, context.Cause(ctx)
		case <-c.ctx.Done():
			if !r.afterClose {
				return found{}, fmt.Errorf("tier: %w", errs.ErrClosed)
			}
			<-fl.done
		}
		if leader {
			return fl.f, fl.err
		}
		// A follower with a fill does not take a lookup's miss for its
		// answer: it reads again, and fills.
		if (gaveUp(fl.err) || r.fill != nil && errors.Is(fl.err, errAbsent)) && ctx.Err() == nil {
			continue
		}
		if fl.err != nil {
			return found{}, fl.err
		}
		if fl.f.v == nil {
			// toStream from the source, or toL2 written: nothing to
			// share but that it is done (a stream opens its own file).
			return found{by: fl.f.by}, nil
		}
		return c.inMemory(r, fl.f.v, Shared)
	}
	return c.below(ctx, req, r)
}

// gaveUp says that a flight's leader stopped for a reason of its own.
func gaveUp(err error) bool {
	return errors.Is(err, errFleetBusy) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// below is the leader's read under L1: L2, L3, then the source or the
// fill, promoting what it finds.
func (c *Cache) below(ctx context.Context, req *request, r *read) (found, error) {
	if r.sink != toL2 {
		// A load that finished between the caller's miss and this flight
		// has promoted it.
		if v, queued, ok := c.inRAM(r.key); ok && !c.expired(v) {
			if queued && r.keep {
				c.keepL1(r.key, v)
			}
			return c.inMemory(r, v, L1)
		}
	}
	if r.sink == toBytes && c.l2 != nil {
		var intoErr error
		v, err := c.l2.GetInto(r.key, r.alloc(&intoErr))
		switch {
		case err == nil:
			lv := storedValue(v.DType, v.Shape, v.Data, v.Written, v.Expires)
			c.promoteL1(r, r.key, lv)
			return found{by: L2, v: lv}, nil
		case intoErr != nil:
			return found{}, intoErr
		default:
			if err := c.l2Failed(req, err, r.place(), r.name); err != nil {
				return found{}, err
			}
		}
	}
	if r.ns != nil {
		return c.belowValue(ctx, req, r)
	}
	// The file before L3: it says what L3 must hold (a forged meta is a
	// miss, not an allocation of whatever it announces).
	f := r.file
	if f == nil {
		var release func()
		var err error
		if f, release, err = c.acquire(r.id); err != nil {
			return found{}, err
		}
		defer release()
	}
	ti, ok := f.Tensor(r.name)
	if !ok {
		return found{}, fmt.Errorf("tier: %s: tensor %s: %w", f.Path(), errs.Quote(r.name), errs.ErrNotFound)
	}
	dtype := string(ti.DType)
	if r.sink == toL2 && ti.Length > streamAbove {
		// Chunk by chunk: an 8 GiB tensor is not held in memory whole
		// (nor sent to L3, which holds entries whole).
		src, err := f.TensorReader(r.name)
		if err != nil {
			return found{}, err
		}
		defer src.Close()
		c.warmLoads.Add(1)
		if err := c.l2.PutStream(r.key, dtype, ti.Shape, ti.Length, src); err != nil {
			return found{}, fmt.Errorf("tier: %s: tensor %s: %w", f.Path(), errs.Quote(r.name), err)
		}
		return found{by: Source, stored: true}, nil
	}
	var lease *l3.Lease
	defer func() {
		if lease != nil { // not handed to a write
			lease.Release()
		}
	}()
	var intoErr error
	var v *l3.Value
	want := tensorExpect(dtype, ti.Shape, ti.Length)
	if r.sink == toStream || r.lookup {
		// A reader of the source writes L2 on the way, not L3: it takes
		// no lease that others would wait on.
		v = c.lookupL3(ctx, r.key, want)
	} else {
		var busy bool
		v, lease, busy = c.fromL3Or(ctx, req, r.key, want, r.alloc(&intoErr), r.wait)
		if busy {
			return found{}, errFleetBusy
		}
	}
	if v != nil {
		lv := &l1Value{dtype: v.DType, shape: v.Shape, data: v.Data}
		if err := c.promote(r, r.key, lv); err != nil {
			return found{}, err
		}
		return found{by: L3, v: lv, stored: r.sink == toL2}, nil
	}
	if intoErr != nil {
		return found{}, intoErr
	}
	if r.sink == toStream {
		return found{by: Source}, nil
	}
	if err := ctx.Err(); err != nil {
		return found{}, context.Cause(ctx)
	}
	b, err := r.buffer(ti.Length)
	if err != nil {
		return found{}, err
	}
	start := time.Now()
	if err := f.ReadTensorInto(r.name, b); err != nil {
		return found{}, err
	}
	req.missTook(time.Since(start))
	k := r.key
	if r.file == nil {
		// The key of the version actually opened, which may be newer
		// than the one stat'ed if the file changed in between.
		if k, err = c.keyOf(f.Identity(), r.name); err != nil {
			return found{}, err
		}
	}
	lv := &l1Value{dtype: dtype, shape: ti.Shape, data: b}
	if r.sink == toL2 {
		c.warmLoads.Add(1)
	}
	switch {
	case r.lookup:
	case !r.owned():
		c.toL3(k, dtype, ti.Shape, b, c.ttl, lease)
		lease = nil
	case lease != nil:
		// The caller owns b once this returns, and other machines wait
		// for this write: make it now.
		c.putL3Now(k, dtype, ti.Shape, b, c.ttl)
	}
	if err := c.promote(r, k, lv); err != nil {
		return found{}, err
	}
	return found{by: Source, v: lv, stored: r.sink == toL2}, nil
}

// belowValue is below for a value, past L2: L3, then the fill.
func (c *Cache) belowValue(ctx context.Context, req *request, r *read) (found, error) {
	st := r.ns
	var v *l3.Value
	var lease *l3.Lease
	switch {
	case c.l3 == nil:
	case r.fill == nil || r.sink == toStream:
		// A lookup takes no lease: it will not write what it misses.
		v = c.lookupL3(ctx, r.key, c.valueExpect())
	default:
		v, lease, _ = c.fromL3Or(ctx, req, r.key, c.valueExpect(), nil, true)
	}
	if v != nil {
		lv := storedValue(v.DType, v.Shape, v.Data, v.Written, v.Expires)
		c.keepL1(r.key, lv)
		// In L2 for what is left of its life in L3.
		ttl := time.Duration(0)
		if lv.expires != 0 {
			ttl = max(time.Duration(lv.expires-c.now().UnixNano()), time.Millisecond)
		}
		c.queueValue(st, r.key, lv, ttl)
		return found{by: L3, v: lv}, nil
	}
	defer func() {
		if lease != nil {
			lease.Release()
		}
	}()
	if r.fill == nil {
		return found{}, fmt.Errorf("tier: namespace %s: value %s: %w%w", errs.Quote(st.name), errs.Quote(r.name), errs.ErrNotFound, errAbsent)
	}
	if err := ctx.Err(); err != nil {
		return found{}, context.Cause(ctx)
	}
	start := time.Now()
	data, err := r.fill(ctx)
	req.missTook(time.Since(start))
	if err != nil {
		return found{}, err
	}
	lv := c.newValue(st, data, r.opts)
	c.keepL1(r.key, lv)
	ttl := c.ttlOf(st, r.opts)
	c.queueValue(st, r.key, lv, ttl)
	c.toL3(r.key, lv.dtype, lv.shape, lv.data, ttl, lease)
	lease = nil
	return found{by: Fill, v: lv}, nil
}

// promoteL1 keeps lv in L1 under k, if r keeps what lower tiers have;
// bytes the caller owns are copied.
func (c *Cache) promoteL1(r *read, k string, lv *l1Value) {
	if !r.keep || r.sink == toL2 {
		return
	}
	if r.owned() {
		cv := *lv
		cv.data = append([]byte(nil), lv.data...)
		lv = &cv
	}
	c.keepL1(k, lv)
}

// promote keeps a tensor read from L3 or the source in L1 (if r keeps it)
// and has it written to L2: now for toL2, else through the write-behind
// queue. Bytes the caller owns are not copied for L2: the Load (r.ld)
// writes them after it finishes, read again from the file (from the page
// cache, as a rule).
func (c *Cache) promote(r *read, k string, lv *l1Value) error {
	if r.sink == toL2 {
		if err := c.l2.Put(k, lv.dtype, lv.shape, lv.data); err != nil {
			// l2 names the cache and a key; the reader wants the model.
			return fmt.Errorf("tier: %s: tensor %s: %w", r.place(), errs.Quote(r.name), err)
		}
		return nil
	}
	c.promoteL1(r, k, lv)
	if c.wb == nil {
		return nil
	}
	if r.owned() || !c.wb.enqueue(k, lv.dtype, lv.shape, lv.data) {
		if r.ld != nil {
			r.ld.drop(r.i)
		}
	}
	return nil
}
