package tier

import (
	"sync"
	"sync/atomic"
)

// writeBehind writes tensors read from the source to L2 in the background.
// It holds at most maxBytes of tensor data; enqueue never blocks, it drops
// the write instead when the queue is full.
type writeBehind struct {
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

// putter is what write-behind needs of L2.
type putter interface {
	Put(key, dtype string, shape []uint64, data []byte) error
}

type wbJob struct {
	key, dtype string
	shape      []uint64
	data       []byte
}

const writeBehindWorkers = 2

func newWriteBehind(p putter, maxBytes int64, log *rateLimitedLog) *writeBehind {
	w := &writeBehind{store: p, log: log, maxBytes: maxBytes, byKey: map[string]*wbJob{}}
	w.cond = sync.NewCond(&w.mu)
	for range writeBehindWorkers {
		w.workers.Go(w.run)
	}
	return w
}

// enqueue queues the write of data under key, and says whether it is
// queued (or was already): false means it was dropped.
func (w *writeBehind) enqueue(key, dtype string, shape []uint64, data []byte) bool {
	n := int64(len(data))
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.byKey[key]; ok {
		return true // the same bytes are on their way already
	}
	if w.closed || w.queued+n > w.maxBytes {
		w.dropped.Add(1)
		return false
	}
	j := &wbJob{key, dtype, shape, data}
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

		if err := w.store.Put(j.key, j.dtype, j.shape, j.data); err != nil {
			w.failed.Add(1)
			w.log.Warn("tier: write-behind to L2 failed", "entry", DescribeKey(j.key), "err", err)
		}
		w.mu.Lock()
		w.queued -= int64(len(j.data))
		delete(w.byKey, j.key)
		w.cond.Broadcast()
		w.mu.Unlock()
	}
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
