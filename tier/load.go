package tier

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"sync"
	"time"

	"github.com/modelcache/modelcache/errs"
)

// Order is the order in which Model.Load delivers tensors.
type Order uint8

const (
	// FileOrder delivers tensors in storage order (Model.Tensors), each
	// as soon as it and those before it are read.
	FileOrder Order = iota
	// ReadyOrder delivers each tensor as soon as it is read.
	ReadyOrder
)

// DefaultMaxInFlight bounds the tensor bytes a Load has read or is reading
// and has not delivered yet.
const DefaultMaxInFlight = 256 << 20

// LoadOptions configures Model.Load.
type LoadOptions struct {
	// Order is FileOrder (the default) or ReadyOrder.
	Order Order
	// Into, if set, returns the buffer the tensor is read into: exactly
	// t.Bytes long, the caller's own memory (pinned host memory, a staging
	// area). L2 decodes and the source reads straight into it; an L1 hit
	// is copied into it. The Tensor delivered then holds that buffer, and
	// the cache keeps no reference to it. Into is called once per tensor
	// per load (a tier that fails to fill the buffer leaves it to the
	// next), from several goroutines at once, in storage order of the
	// tensors.
	Into func(t *TensorInfo) ([]byte, error)
	// MaxInFlight bounds the bytes of tensors read ahead or being
	// delivered (until each returns); default DefaultMaxInFlight. A tensor
	// larger than it is read alone.
	MaxInFlight int64
	// Parallel is how many tensors are read at once; default twice
	// GOMAXPROCS, at least 4. Reads of large tensors are split further.
	Parallel int
}

// LoadResult says what a Load did.
type LoadResult struct {
	Path    string
	Tensors int
	Bytes   uint64
	// Served counts the tensors each tier served (Shared: by a read of
	// another caller in this process, of the same tensor at once);
	// SourceBytes are the bytes read from the model files (the origin).
	L1, L2, L3, Source, Shared int
	SourceBytes                uint64
	Elapsed                    time.Duration
}

// GBps is the load's rate in 10⁹ bytes a second.
func (r *LoadResult) GBps() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Bytes) / r.Elapsed.Seconds() / 1e9
}

// errStopLoad ends a Load whose iterator's consumer stopped early.
var errStopLoad = errors.New("tier: load stopped")

// All is Load as an iterator: every tensor in the order opts says, then, if
// the load failed, one last pair with the error.
func (m *Model) All(ctx context.Context, opts *LoadOptions) iter.Seq2[*Tensor, error] {
	return func(yield func(*Tensor, error) bool) {
		_, err := m.Load(ctx, opts, func(t *Tensor) error {
			if !yield(t, nil) {
				return errStopLoad
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStopLoad) {
			yield(nil, err)
		}
	}
}

// Load reads every tensor of the model through the cache and calls each
// with it, on the caller's goroutine, one at a time. Reads run ahead of
// delivery, in storage order, several at once: L1 hits at once, L2 entries
// decoded on every core, misses read from the file with parallel large
// reads and promoted to L1 and L2 without waiting for L2's writes. At most
// opts.MaxInFlight bytes are read ahead of delivery, whatever the model's
// size.
//
// A model larger than half of L1 does not flush L1: only the first quarter
// of L1's budget worth of its tensors (the same ones at every load) is kept
// there, so loading it in a loop hits L1 for that part and leaves the rest
// of L1 alone.
//
// Load returns at the first error, from a read or from each, once no read
// of its is running: no buffer given by opts.Into is written after it
// returns.
func (m *Model) Load(ctx context.Context, opts *LoadOptions, each func(*Tensor) error) (*LoadResult, error) {
	c := m.c
	if err := c.enter(); err != nil {
		return nil, err
	}
	defer c.exit()
	if err := m.usable(); err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &LoadOptions{}
	}
	maxBytes := opts.MaxInFlight
	if maxBytes <= 0 {
		maxBytes = DefaultMaxInFlight
	}
	parallel := opts.Parallel
	if parallel <= 0 {
		parallel = max(4, 2*runtime.GOMAXPROCS(0))
	}
	start := time.Now()
	res := &LoadResult{Path: m.path, Tensors: len(m.tensors), Bytes: m.bytes}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(c.ctx, func() { cancel(fmt.Errorf("tier: %w", errs.ErrClosed)) })()

	l := &loading{m: m, opts: opts, budget: newByteBudget(maxBytes), keep: m.keepInL1()}
	n := len(m.tensors)
	done := make([]chan struct{}, n)
	got := make([]*Tensor, n)
	ready := make(chan int, n)
	for i := range done {
		done[i] = make(chan struct{})
	}
	// Buffered: the dispatcher runs ahead of the workers as far as the
	// budget lets it, prefetching as it goes.
	work := make(chan int, n)
	var workers sync.WaitGroup
	for range min(parallel, max(n, 1)) {
		workers.Go(func() {
			// Tensors another machine is reading from the origin wait here
			// while this worker takes the next ones (so that machines
			// loading one model at once split it instead of following
			// one leader), and are read when no other work is at hand.
			var later []int
			for {
				i, wait, ok := 0, false, true
				select {
				case i, ok = <-work:
				default:
					if len(later) > 0 {
						i, wait, later = later[0], true, later[1:]
					} else {
						i, ok = <-work
					}
				}
				if !ok {
					if len(later) == 0 {
						return
					}
					i, wait, later = later[0], true, later[1:]
				}
				t, err := l.fetch(ctx, i, wait)
				if errors.Is(err, errFleetBusy) {
					later = append(later, i)
					continue
				}
				if err != nil {
					cancel(err)
				}
				got[i] = t
				close(done[i])
				ready <- i
			}
		})
	}
	// The dispatcher takes budget in storage order, so the tensor next in
	// storage order has always been dispatched when a later one has: the
	// consumer never waits for budget that only it can free.
	var dispatcher sync.WaitGroup
	dispatcher.Go(func() {
		defer close(work)
		for i := range m.tensors {
			if err := l.budget.take(ctx, m.tensors[i].Bytes); err != nil {
				return
			}
			l.prefetch(i)
			select {
			case work <- i:
			case <-ctx.Done():
				l.budget.give(m.tensors[i].Bytes)
				return
			}
		}
	})
	deliver := func(i int) error {
		t := got[i]
		// The tensor's bytes count until the caller is done with them.
		defer l.budget.give(m.tensors[i].Bytes)
		if t == nil {
			return context.Cause(ctx) // its error cancelled the load
		}
		switch t.ServedBy {
		case L1:
			res.L1++
		case L2:
			res.L2++
		case L3:
			res.L3++
		case Shared:
			res.Shared++
		default:
			res.Source++
			res.SourceBytes += m.tensors[i].Bytes
		}
		if err := each(t); err != nil {
			cancel(err)
			return err
		}
		return nil
	}
	delivered := 0
	for k := 0; k < n; k++ {
		i := k
		if opts.Order == ReadyOrder {
			select {
			case i = <-ready:
			case <-ctx.Done():
			}
		} else {
			select {
			case <-done[i]:
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil || deliver(i) != nil {
			break
		}
		delivered++
	}
	cause := context.Cause(ctx)
	cancel(nil)
	workers.Wait()
	dispatcher.Wait() // nothing of the load runs after it returns
	res.Elapsed = time.Since(start)
	if delivered < n {
		return res, cause
	}
	l.promoteLater()
	return res, nil
}

// loading is one Load in progress.
type loading struct {
	m      *Model
	opts   *LoadOptions
	budget *byteBudget
	keep   int // tensors m.tensors[:keep] are kept in L1

	mu      sync.Mutex
	dropped []int // tensors read from the source whose L2 write was dropped
}

// prefetch has the disk start reading tensor i's L2 entry, unless RAM has
// it: the dispatcher runs ahead of the workers by up to the budget, so the
// disk reads large ranges ahead while earlier tensors are decoded.
func (l *loading) prefetch(i int) {
	c := l.m.c
	if c.l2 == nil {
		return
	}
	ti := &l.m.tensors[i]
	if ti.Bytes < prefetchAbove {
		return // held in the LSM tree or read whole by readahead: not worth a lookup
	}
	key := ti.key
	if c.l1.Contains(key) {
		return
	}
	c.l2.Prefetch(key)
}

// prefetchAbove is the smallest tensor whose L2 entry a load announces
// ahead.
const prefetchAbove = 256 << 10

// keepInL1 is how many of the model's first tensors a Load keeps in L1: all
// when the model takes at most half of L1, else those within the first
// quarter of it.
func (m *Model) keepInL1() int {
	budget := uint64(m.c.l1Bytes)
	if m.bytes <= budget/2 {
		return len(m.tensors)
	}
	var sum uint64
	for i, t := range m.tensors {
		if sum += t.Bytes; sum > budget/4 {
			return i
		}
	}
	return len(m.tensors)
}

// errFleetBusy: another machine is reading the tensor from the origin.
var errFleetBusy = errors.New("tier: another machine is reading it")

// fetch reads tensor i through the walk, counted as one request. With wait
// false, a tensor another machine is reading from the origin is
// errFleetBusy, not waited for (nor counted).
func (l *loading) fetch(ctx context.Context, i int, wait bool) (t *Tensor, err error) {
	c := l.m.c
	req := c.begin(&c.tensors)
	defer func() {
		if err != errFleetBusy {
			req.end(servedBy(t), err)
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	ti := &l.m.tensors[i]
	pf := l.m.files[ti.file]
	if v, ok := c.l1.Get(ti.key); ok {
		// The hot path, without a walk: an L1 hit.
		data := v.data
		if l.opts.Into != nil {
			if data, err = l.into(ti); err != nil {
				return nil, err
			}
			copy(data, v.data)
		}
		return &Tensor{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, ServedBy: L1, data: data}, nil
	}
	r := &read{key: ti.key, where: pf.f.Path(), name: ti.Name, file: pf.f, wait: wait, keep: i < l.keep, ld: l, i: i}
	// A copy for the walk, so that the L1 hit above keeps req on the
	// stack (this read is not detached: the walk is done with it when it
	// returns).
	wreq := req
	f, err := c.walk(ctx, &wreq, r)
	req = wreq
	if err != nil {
		return nil, err
	}
	return &Tensor{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, ServedBy: f.by, data: f.v.data}, nil
}

// into asks LoadOptions.Into for tensor ti's buffer, exactly its length.
func (l *loading) into(ti *TensorInfo) ([]byte, error) {
	b, err := l.opts.Into(ti)
	if err == nil && uint64(len(b)) != ti.Bytes {
		err = fmt.Errorf("tier: LoadOptions.Into gave %d bytes for tensor %s of %d", len(b), errs.Quote(ti.Name), ti.Bytes)
	}
	return b, err
}

// drop leaves tensor i's L2 write for after the load.
func (l *loading) drop(i int) {
	l.mu.Lock()
	l.dropped = append(l.dropped, i)
	l.mu.Unlock()
}

// promoteLater writes to L2, in the background and one at a time, the
// tensors whose write the full queue dropped during the load: the load did
// not wait for L2, and the next one should not read the source again.
func (l *loading) promoteLater() {
	c := l.m.c
	// A load that its caller gave up on may still add to dropped.
	l.mu.Lock()
	todo := l.dropped
	l.mu.Unlock()
	if len(todo) == 0 || c.l2 == nil {
		return
	}
	if c.enter() != nil {
		return
	}
	// Hold the files at their version until done.
	var pins []*pinnedFile
	for _, pf := range l.m.files {
		f, release, err := c.acquire(pf.f.Identity())
		if err != nil {
			for _, p := range pins {
				p.release()
			}
			c.exit()
			return
		}
		pins = append(pins, &pinnedFile{f: f, release: release, group: pf.group})
	}
	c.promotions.Add(1)
	go func() {
		defer c.promotions.Done()
		defer c.exit()
		defer func() {
			for _, p := range pins {
				p.release()
			}
		}()
		c.promoting.Lock()
		defer c.promoting.Unlock()
		// Close waits for these writes as for the write-behind queue's
		// (up to closeWait), so a program that loads and exits still
		// leaves the model in L2.
		for _, i := range todo {
			ti := &l.m.tensors[i]
			if _, err := c.warmOne(context.Background(), pins[ti.file], ti, true); err != nil {
				if !errors.Is(err, errs.ErrClosed) {
					c.warn.Warn("tier: writing a loaded tensor to L2 failed", "path", ti.File, "tensor", ti.Name, "err", err)
				}
				return
			}
		}
	}()
}

// byteBudget is a counting semaphore of bytes, taken in order.
type byteBudget struct {
	mu    sync.Mutex
	cond  chan struct{} // closed and replaced at every give
	free  int64
	total int64
}

func newByteBudget(n int64) *byteBudget {
	return &byteBudget{cond: make(chan struct{}), free: n, total: n}
}

// take waits until n bytes are free (all of them, for n over the total) and
// takes them.
func (b *byteBudget) take(ctx context.Context, n uint64) error {
	want := int64(min(n, uint64(b.total)))
	for {
		b.mu.Lock()
		if b.free >= want {
			b.free -= want
			b.mu.Unlock()
			return nil
		}
		wait := b.cond
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (b *byteBudget) give(n uint64) {
	b.mu.Lock()
	b.free += int64(min(n, uint64(b.total)))
	close(b.cond)
	b.cond = make(chan struct{})
	b.mu.Unlock()
}
