package l2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"time"

	badger "github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/modelcache/modelcache/serialize"

	"github.com/modelcache/modelcache/errs"
)

// Entries larger than a chunk need not pass through memory whole: PutStream
// writes one from a reader and OpenEntry reads one chunk by chunk, so that
// an 8 GiB file is cached and served in a few chunks' worth of memory.

// PutStream stores under key the length bytes that r yields, read and
// encoded a chunk at a time (a few chunks at once, on every core), never
// holding the value whole. After the last chunk it reads r once more and
// expects io.EOF: a reader that checks its source at the end (a CRC) reports
// there. The entry becomes visible only when complete; an error leaves any
// older entry under key as it was.
func (s *Store) PutStream(key, dtype string, shape []uint64, length uint64, r io.Reader) error {
	return s.PutStreamTTL(key, dtype, shape, length, r, s.ttl)
}

// PutStreamTTL is PutStream with the entry's own time to live; 0 means no
// expiry.
func (s *Store) PutStreamTTL(key, dtype string, shape []uint64, length uint64, r io.Reader, ttl time.Duration) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	return s.putWith(key, int64(min(length, 1<<62)), func() error { return s.putStream(key, dtype, shape, length, r, ttl) })
}

// flushBytes is how many chunk bytes PutStream holds in a write batch.
const flushBytes = 64 << 20

func (s *Store) putStream(key, dtype string, shape []uint64, length uint64, r io.Reader, ttl time.Duration) error {
	cs := s.codecs.ChunkSize()
	h := serialize.Header{DType: dtype, Shape: slices.Clone(shape), Length: length, ChunkSize: uint32(cs)}
	if err := h.CheckLength(); err != nil {
		return err
	}
	n := serialize.NumChunks(length, h.ChunkSize)
	h.Chunks = make([]serialize.ChunkInfo, n)
	id := newID()
	wb := s.db.NewWriteBatch()
	// One buffer per encoder: reading waits for a free one, so memory is
	// a few chunks whatever the length.
	workers := max(1, min(runtime.GOMAXPROCS(0), n))
	bufs := make(chan []byte, workers)
	for range workers {
		bufs <- make([]byte, cs)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return firstErr != nil
	}
	// Badger's write batch counts a value in the value log by its pointer,
	// so it would hold every chunk until Flush: flush every flushBytes.
	var pending int
	for i := 0; i < n && !failed(); i++ {
		if pending >= flushBytes {
			wg.Wait()
			if err := wb.Flush(); err != nil {
				fail(err)
				break
			}
			wb, pending = s.db.NewWriteBatch(), 0
		}
		pending += h.ChunkLen(i)
		buf := <-bufs
		chunk := buf[:h.ChunkLen(i)]
		if _, err := io.ReadFull(r, chunk); err != nil {
			fail(fmt.Errorf("reading chunk %d of %d: %w", i, n, err))
			break
		}
		wg.Go(func() {
			info, enc := s.codecs.EncodeChunk(dtype, chunk)
			bufs <- buf
			h.Chunks[i] = info
			if err := wb.Set(chunkKey(id, i), enc); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		var one [1]byte
		if k, err := r.Read(one[:]); k != 0 {
			firstErr = fmt.Errorf("the source holds more than its %d bytes", length)
		} else if err != nil && !errors.Is(err, io.EOF) {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = wb.Flush()
	} else {
		wb.Cancel()
	}
	if firstErr != nil {
		// Sub-batches may have been committed already.
		if derr := s.deleteChunks(id, n); derr != nil {
			s.needSweep.Store(true)
		}
		return firstErr
	}
	return s.commit(key, id, &h, ttl)
}

// EntryReader reads one entry chunk by chunk. It reads the version of the
// entry that was current when it was opened; if that is replaced or removed
// meanwhile, a read is errs.ErrNotFound.
type EntryReader struct {
	s   *Store
	key string
	m   *meta
}

// OpenEntry opens the entry under key for reading chunk by chunk. A
// missing or expired entry is errs.ErrNotFound. It counts as a hit.
func (s *Store) OpenEntry(key string) (*EntryReader, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	m, err := s.liveMeta(key)
	switch {
	case err == nil:
	case errors.Is(err, errs.ErrNotFound):
		s.misses.Add(1)
		return nil, fmt.Errorf("l2: %s: get %s: %w", s.dir, errs.Quote(key), err)
	default:
		return nil, s.dropDamaged(key, err)
	}
	s.hits.Add(1)
	s.touch(key)
	return &EntryReader{s: s, key: key, m: m}, nil
}

// Header describes the entry: dtype, shape, length and chunks.
func (r *EntryReader) Header() *serialize.Header { return r.m.header }

// ReadChunk decodes chunk i into dst, which must be Header().ChunkLen(i)
// bytes. A damaged chunk drops the entry and is errs.ErrCorrupt.
func (r *EntryReader) ReadChunk(i int, dst []byte) error {
	s := r.s
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	h := r.m.header
	if i < 0 || i >= len(h.Chunks) || len(dst) != h.ChunkLen(i) {
		return fmt.Errorf("l2: %s: get %s: chunk %d: bad destination", s.dir, errs.Quote(r.key), i)
	}
	missing := false
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(chunkKey(r.m.id, i))
		if errors.Is(err, badger.ErrKeyNotFound) {
			missing = true
			return fmt.Errorf("%w: chunk %d missing", errs.ErrCorrupt, i)
		}
		if err != nil {
			return damaged(err)
		}
		// Read once, in a stream: its pages need not stay resident.
		return damaged(item.ValueAndRelease(func(v []byte) error { return s.codecs.DecodeChunk(h, i, dst, v) }))
	})
	if err == nil {
		return nil
	}
	if missing {
		if cur, merr := s.readMeta(r.key); merr != nil || !bytes.Equal(cur.id, r.m.id) {
			return fmt.Errorf("l2: %s: get %s: replaced while read: %w", s.dir, errs.Quote(r.key), errs.ErrNotFound)
		}
	}
	return s.dropDamaged(r.key, err)
}

// dropDamaged removes the entry under key when err says it is damaged, and
// returns err in l2's words.
func (s *Store) dropDamaged(key string, err error) error {
	if errors.Is(err, errs.ErrCorrupt) || errors.Is(err, errs.ErrVersion) {
		s.corrupt.Add(1)
		if derr := s.removeEntries([]string{key}); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	return fmt.Errorf("l2: %s: get %s: %w", s.dir, errs.Quote(key), err)
}
