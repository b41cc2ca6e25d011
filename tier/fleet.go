package tier

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/l3"
)

// The fleet tier. Reads go L1 → L2 → L3 → source. What L3 has is promoted
// to L2 and L1; what is read from the source is written to L3 through a
// bounded background queue, as to L2. When several machines miss one entry
// at once, one of them takes its lease in Redis and reads the origin; the
// others wait for its write (bounded, and taking over when the lease ends
// without one), so that the origin is read about once per fleet. A sick L3
// (down, slow, damaged entries) is a miss, never an error: its breaker
// turns it off until it answers again.

// fleetWait bounds how long a reader waits for other machines' reads of
// an entry (each lease it waits on lasts at most one lease period past its
// holder's last renewal) before reading the origin itself.
const fleetWait = 5 * time.Minute

// DefaultMaxValueBytes is Options.MaxValueBytes by default.
const DefaultMaxValueBytes = l3.DefaultMaxLength

// fleetStats counts what L3 did for this process.
type fleetStats struct {
	errors, corrupt, writes, writeErrors, waits, leases atomic.Uint64
}

// fromL3Or looks for key in L3, an entry want admits. It returns the
// value (read into alloc's buffer, if alloc is not nil), or a lease when
// this process should read the origin and write L3, or neither when L3
// cannot help (then read the origin without writing L3 first). With wait
// false it does not wait for another machine's read: it says busy
// instead, for a caller with other work. ctx
// ends every wait: the caller's (with Close's cancellation), c.ctx for
// reads that callers share (Close cancels them), or one that Close does
// not cancel for the writes Close waits for.
func (c *Cache) fromL3Or(ctx context.Context, req *request, key string, want *l3.Expect, alloc func(string, []uint64, uint64) ([]byte, error), wait bool) (v *l3.Value, lease *l3.Lease, busy bool) {
	if c.l3 == nil {
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, fleetWait)
	defer cancel()
	for range 4 {
		v, err := c.l3.GetInto(ctx, key, want, alloc)
		switch {
		case err == nil:
			return v, nil, false
		case !errors.Is(err, errs.ErrNotFound):
			if ctx.Err() != nil {
				return nil, nil, false // closing, or the caller gave up
			}
			c.fleet.errors.Add(1)
			if errors.Is(err, errs.ErrCorrupt) {
				c.fleet.corrupt.Add(1)
			}
			c.warn.Warn("tier: L3 read failed, reading the source", "entry", DescribeKey(key), "err", err)
			return nil, nil, false
		}
		lease, ok, err := c.l3.Lease(ctx, key)
		if err != nil {
			c.fleet.errors.Add(1)
			return nil, nil, false
		}
		if ok {
			// The entry may have been written, and its lease let go,
			// between the miss above and this lease: look again, or the
			// origin is read twice.
			if has, err := c.l3.Has(ctx, key); err == nil && has {
				lease.Release()
				continue
			}
			req.l3Missed()
			c.fleet.leases.Add(1)
			return nil, lease, false
		}
		if !wait {
			return nil, nil, true
		}
		// Another machine reads it: wait for its write.
		c.fleet.waits.Add(1)
		if _, err := c.l3.Await(ctx, key); err != nil {
			if errors.Is(err, errs.ErrCorrupt) && ctx.Err() == nil {
				// A lease no machine of the fleet holds (set by hand, or
				// forged): l3 deleted it; take it.
				c.fleet.corrupt.Add(1)
				c.warn.Warn("tier: ignoring an L3 lease no holder can have set", "entry", DescribeKey(key), "err", err)
				continue
			}
			c.fleet.errors.Add(1)
			return nil, nil, false
		}
	}
	return nil, nil, false
}

// tensorExpect is what L3 must hold for a tensor: what its file says.
func tensorExpect(dtype string, shape []uint64, n uint64) *l3.Expect {
	return &l3.Expect{Exact: true, DType: dtype, Shape: shape, Length: n}
}

// valueExpect is what L3 may hold for a value: at most MaxValueBytes.
func (c *Cache) valueExpect() *l3.Expect { return &l3.Expect{MaxLength: c.maxValue} }

// lookupL3 looks in L3 for an entry want admits, without a lease or a
// wait: for a read that will not write what it misses (a lookup of a
// value, a stream of a tensor's file).
func (c *Cache) lookupL3(ctx context.Context, k string, want *l3.Expect) *l3.Value {
	if c.l3 == nil {
		return nil
	}
	v, err := c.l3.GetInto(ctx, k, want, nil)
	if err != nil && !errors.Is(err, errs.ErrNotFound) && ctx.Err() == nil {
		c.fleet.errors.Add(1)
		if errors.Is(err, errs.ErrCorrupt) {
			c.fleet.corrupt.Add(1)
			c.warn.Warn("tier: L3 read failed, reading the source", "entry", DescribeKey(k), "err", err)
		}
	}
	return v
}

// fleetEpoch is the fleet's epoch of ns. A malformed record (written by
// another client) is a warning, and an error wrapping errs.ErrCorrupt: the
// local epoch stands.
func (c *Cache) fleetEpoch(ns string) (uint64, error) {
	e, err := c.l3.Epoch(c.ctx, ns)
	if errors.Is(err, errs.ErrCorrupt) {
		c.fleet.corrupt.Add(1)
		c.warn.Warn("tier: ignoring a malformed epoch in L3", "namespace", errs.Quote(ns), "err", err)
	}
	return e, err
}

// toL3 writes an entry read from the source to L3 in the background and
// then lets its lease go (if any). data must not change afterwards; when
// the queue is full the write is made now, if a lease says other machines
// wait for it, or dropped.
func (c *Cache) toL3(key, dtype string, shape []uint64, data []byte, ttl time.Duration, lease *l3.Lease) {
	if c.l3 == nil {
		return
	}
	put := func() error {
		defer func() {
			if lease != nil {
				lease.Release()
			}
		}()
		c.putL3Now(key, dtype, shape, data, ttl)
		return nil
	}
	if c.l3wb.add(&wbJob{key: key, dtype: dtype, shape: shape, data: data, put: put}) {
		return
	}
	if lease != nil {
		_ = put()
	}
}

// putL3Now writes an entry to L3 before it returns.
func (c *Cache) putL3Now(key, dtype string, shape []uint64, data []byte, ttl time.Duration) {
	// Not c.ctx: Close finishes the queued writes after cancelling it.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.fleet.writes.Add(1)
	if err := c.l3.Put(ctx, key, dtype, shape, data, ttl); err != nil {
		c.fleet.writeErrors.Add(1)
	}
}

// CheckL3 asks the fleet tier whether it answers: nil when it does, or
// when there is none.
func (c *Cache) CheckL3(ctx context.Context) error {
	if c.l3 == nil {
		return nil
	}
	return c.l3.Ping(ctx)
}

// L3Stats are the fleet tier's counters since Open.
type L3Stats struct {
	Enabled bool
	Down    bool   // the breaker is open: L3 is not answering
	Errors  uint64 // reads, leases or waits that failed (served from the source)
	// Corrupt counts the records among them that were malformed or
	// forged (a meta that does not match what was read, a lease no holder
	// set, one that does not authenticate): each was ignored and dropped.
	Corrupt uint64
	Leases  uint64 // entries this process read from the origin for the fleet
	Waits   uint64 // times it waited for another machine's read
	Writes  uint64 // entries written
	// WriteErrors failed; WriteDropped were skipped, the queue full.
	WriteErrors, WriteDropped uint64
}

func (c *Cache) l3Stats() L3Stats {
	if c.l3 == nil {
		return L3Stats{}
	}
	f := &c.fleet
	return L3Stats{Enabled: true, Down: c.l3.Down(), Errors: f.errors.Load(), Corrupt: f.corrupt.Load(), Leases: f.leases.Load(), Waits: f.waits.Load(),
		Writes: f.writes.Load(), WriteErrors: f.writeErrors.Load(), WriteDropped: c.l3wb.dropped.Load()}
}
