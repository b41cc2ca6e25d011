package tier

import (
	"slices"
	"sync"
	"sync/atomic"
)

// writeBehind makes writes to a lower tier in the background: to L2 (the
// entries a read promotes, values put) or to L3 (entries read from the
// origin or filled). It holds at most maxBytes of data; enqueue never
// blocks, it drops the write instead when the queue is full.
type writeBehind struct {
	tier     string // "l2" or "l3", for warnings
	store    putter
	log      *rateLimitedLog
	maxBytes int64

	// mu guards queue, byKey, queued and closed; cond signals a change of
	// them.
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*wbJob
	byKey   map[string]*wbJob // queued and in flight: never twice, and readable
	queued  int64             // bytes in queue and in flight
	closed  bool
	workers sync.WaitGroup

	dropped, failed atomic.Uint64
}

// putter is what write-behind needs of the tier it writes to.
type putter interface {
	Put(key, dtype string, shape []uint64, data []byte) error
}

type wbJob struct {
	key, dtype string
	shape      []uint64
	data       []byte
	// put, if set, writes the job instead of putter.Put (a value's own
	// TTL and namespace share).
	put func() error
}

const writeBehindWorkers = 2

// newWriteBehind writes to tier ("l2", "l3": for warnings) through p, or
// through each job's own put when p is nil.
func newWriteBehind(tier string, p putter, maxBytes int64, log *rateLimitedLog) *writeBehind {
	w := &writeBehind{tier: tier, store: p, log: log, maxBytes: maxBytes, byKey: map[string]*wbJob{}}
	w.cond = sync.NewCond(&w.mu)
	for range writeBehindWorkers {
		w.workers.Go(w.run)
	}
	return w
}

// enqueue queues the write of data under key, and says whether it is
// queued (or was already): false means it was dropped.
func (w *writeBehind) enqueue(key, dtype string, shape []uint64, data []byte) bool {
	return w.add(&wbJob{key: key, dtype: dtype, shape: shape, data: data})
}

func (w *writeBehind) add(j *wbJob) bool {
	key, n := j.key, int64(len(j.data))
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.byKey[key]; ok {
		return true // the same bytes are on their way already
	}
	if w.closed || w.queued+n > w.maxBytes {
		w.dropped.Add(1)
		return false
	}
	w.queue = append(w.queue, j)
	w.byKey[key] = j
	w.queued += n
	w.cond.Broadcast()
	return true
}

// pending returns the write queued or in flight for key, whose bytes
// readers may share.
func (w *writeBehind) pending(key string) (*wbJob, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	j, ok := w.byKey[key]
	return j, ok
}

func (w *writeBehind) run() {
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closed {
			w.cond.Wait()
		}
		if len(w.queue) == 0 {
			w.mu.Unlock()
			return
		}
		j := w.queue[0]
		w.queue[0] = nil
		w.queue = w.queue[1:]
		w.mu.Unlock()

		put := j.put
		if put == nil {
			put = func() error { return w.store.Put(j.key, j.dtype, j.shape, j.data) }
		}
		if err := put(); err != nil {
			w.failed.Add(1)
			w.log.Warn("tier: write-behind failed", "tier", w.tier, "entry", DescribeKey(j.key), "err", err)
		}
		w.mu.Lock()
		w.queued -= int64(len(j.data))
		delete(w.byKey, j.key)
		w.cond.Broadcast()
		w.mu.Unlock()
	}
}

// settle removes the write queued for key, or waits for it if it is in
// flight, so that a write the caller makes next is not overwritten by it.
func (w *writeBehind) settle(key string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		j, ok := w.byKey[key]
		if !ok {
			return
		}
		if i := slices.Index(w.queue, j); i >= 0 {
			w.queue = slices.Delete(w.queue, i, i+1)
			delete(w.byKey, key)
			w.queued -= int64(len(j.data))
			w.cond.Broadcast()
			return
		}
		w.cond.Wait()
	}
}

// queuedBytes is what the queue holds and writes now.
func (w *writeBehind) queuedBytes() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.queued
}

// flush waits until the queue is empty and nothing is in flight.
func (w *writeBehind) flush() {
	w.mu.Lock()
	for w.queued > 0 {
		w.cond.Wait()
	}
	w.mu.Unlock()
}

// close finishes the queued writes and stops the workers.
func (w *writeBehind) close() {
	w.mu.Lock()
	w.closed = true
	w.cond.Broadcast()
	w.mu.Unlock()
	w.workers.Wait()
}
