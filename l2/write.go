// Writing and removing entries.

package l2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/modelcache/modelcache/internal/third_party/badger"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/serialize"
)

// dropPrefixes removes every key under the prefixes. Unlike deletes, which
// leave the values' value-log space unaccounted until compaction happens to
// meet them, DropPrefix compacts them away at once and records the freed
// space, so value-log GC can reclaim it. Callers hold writeMu exclusively
// (or are Open).
func (s *Store) dropPrefixes(prefixes [][]byte) error {
	const batch = 256 // DropPrefix checks each prefix with its own iterator
	for len(prefixes) > 0 {
		n := min(len(prefixes), batch)
		if err := s.db.DropPrefix(prefixes[:n]...); err != nil {
			return fmt.Errorf("l2: %s: dropping chunks: %w", s.dir, err)
		}
		prefixes = prefixes[n:]
	}
	return nil
}

func (s *Store) deleteKeys(keys [][]byte) error {
	if len(keys) == 0 {
		return nil
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range keys {
		if err := wb.Delete(k); err != nil {
			return fmt.Errorf("l2: %s: %w", s.dir, err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fmt.Errorf("l2: %s: %w", s.dir, err)
	}
	return nil
}

// Put encodes and stores data under key, replacing any older entry, to live
// for Options.TTL. When it returns nil the entry is complete and readable; a
// failed or interrupted Put leaves the older entry, if any, intact.
func (s *Store) Put(key, dtype string, shape []uint64, data []byte) error {
	return s.PutTTL(key, dtype, shape, data, s.ttl)
}

// PutTTL is Put with the entry's own time to live; 0 means no expiry.
func (s *Store) PutTTL(key, dtype string, shape []uint64, data []byte, ttl time.Duration) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	return s.putWith(key, int64(len(data)), func() error { return s.put(key, dtype, shape, data, ttl) })
}

// putWith runs write, which stores n bytes under key, between the checks
// and the bookkeeping every put has: free space first, then the counters and
// the budget.
func (s *Store) putWith(key string, n int64, write func() error) error {
	if err := s.checkSpace(n); err != nil {
		s.putErrors.Add(1)
		return err
	}
	s.writeMu.RLock()
	err := write()
	s.writeMu.RUnlock()
	if err != nil {
		s.putErrors.Add(1)
		return fmt.Errorf("l2: %s: put %s: %w", s.dir, errs.Quote(key), err)
	}
	s.puts.Add(1)
	return s.enforceBudget(key)
}

func (s *Store) put(key, dtype string, shape []uint64, data []byte, ttl time.Duration) error {
	e, err := s.codecs.Encode(dtype, shape, data)
	if err != nil {
		return err
	}
	id := newID()
	if len(e.Chunks) > 0 {
		wb := s.db.NewWriteBatch()
		for i, c := range e.Chunks {
			if err := wb.Set(chunkKey(id, i), c); err != nil {
				wb.Cancel()
				return err
			}
		}
		if err := wb.Flush(); err != nil {
			return err
		}
	}
	return s.commit(key, id, &e.Header, ttl)
}

// commit makes the entry whose chunks are stored under id visible under
// key: the meta record, swapped in with the old chunks' removal and the
// entry's records in the order index. On failure it removes the chunks.
func (s *Store) commit(key string, id []byte, h *serialize.Header, ttl time.Duration) error {
	mv := make([]byte, metaFixed, metaFixed+128+len(h.Chunks)*9)
	copy(mv, id)
	now := s.now()
	var expires int64
	if ttl > 0 {
		expires = expiry(now, ttl)
	}
	binary.LittleEndian.PutUint64(mv[idLen:], uint64(now.UnixNano()))
	binary.LittleEndian.PutUint64(mv[idLen+8:], uint64(expires))
	mv, err := h.AppendBinary(mv)
	if err != nil {
		if derr := s.deleteChunks(id, len(h.Chunks)); derr != nil {
			s.needSweep.Store(true)
		}
		return err
	}
	mk := metaKey(key)
	var old *meta
	var prev order
	var hadPrev bool
	o := orderOf(key, len(mv), h, expires)
	tick := s.clock.Add(1)
	err = s.update(func(txn *badger.Txn) error {
		old = nil
		var err error
		if prev, hadPrev, err = unlink(txn, key); err != nil {
			return err
		}
		if err := link(txn, key, tick, o); err != nil {
			return err
		}
		if item, err := txn.Get(mk); err == nil {
			// An unreadable old record only means there is nothing to clean.
			_ = item.Value(func(v []byte) error { old, _ = parseMeta(v); return nil })
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if old != nil {
			for i := range old.header.Chunks {
				if err := txn.Delete(chunkKey(old.id, i)); err != nil {
					return err
				}
			}
		}
		return txn.Set(mk, mv)
	})
	if err != nil {
		if derr := s.deleteChunks(id, len(h.Chunks)); derr != nil {
			s.needSweep.Store(true)
		}
		return err
	}
	s.mu.Lock()
	if hadPrev {
		s.entries--
		s.logical -= prev.logical
		s.stored -= prev.stored
		s.charged -= prev.charge
	}
	s.entries++
	s.logical += o.logical
	s.stored += o.stored
	s.charged += o.charge
	s.mu.Unlock()
	return nil
}

// update runs fn in a read-write transaction, again (from the start) when
// it conflicted with a concurrent one, up to commitRetries times.
func (s *Store) update(fn func(txn *badger.Txn) error) error {
	var err error
	for range commitRetries {
		if err = s.db.Update(fn); !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return err
}

func (s *Store) deleteChunks(id []byte, n int) error {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = chunkKey(id, i)
	}
	return s.deleteKeys(keys)
}

// checkSpace refuses a write of n bytes that would leave less than the
// reserve free on the directory's file system.
func (s *Store) checkSpace(n int64) error {
	free, err := freeSpace(s.dir)
	if err != nil {
		return nil // unknown: let the write find out
	}
	if free-n < s.reserve {
		return fmt.Errorf("l2: %s: %w: %d bytes free, a write of %d must leave %d", s.dir, errs.ErrNoSpace, free, n, s.reserve)
	}
	return nil
}

// Delete removes the entries under keys; missing keys are not an error.
// Removing many at once costs one pass over the chunks, not one per key.
func (s *Store) Delete(keys ...string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	return s.removeEntries(keys)
}

// removeEntries deletes the meta records of keys (the commit point: the
// entries are gone once that returns) and then drops their chunks.
func (s *Store) removeEntries(keys []string) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	var prefixes [][]byte
	const batch = 250 // well inside Badger's transaction limits
	for start := 0; start < len(keys); start += batch {
		part := keys[start:min(start+batch, len(keys))]
		var ids [][]byte
		var gone []order
		err := s.update(func(txn *badger.Txn) error {
			ids, gone = ids[:0], gone[:0]
			for _, key := range part {
				o, ok, err := unlink(txn, key)
				if err != nil {
					return err
				}
				if ok {
					gone = append(gone, o)
				}
				item, err := txn.Get(metaKey(key))
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				// Chunks of an unreadable record are swept at the next Open,
				// which Close makes a recovery.
				_ = item.Value(func(v []byte) error {
					if m, err := parseMeta(v); err == nil {
						ids = append(ids, append([]byte{chunkPrefix}, m.id...))
					} else {
						s.needSweep.Store(true)
					}
					return nil
				})
				if err := txn.Delete(metaKey(key)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("l2: %s: delete: %w", s.dir, err)
		}
		s.mu.Lock()
		for _, o := range gone {
			s.entries--
			s.logical -= o.logical
			s.stored -= o.stored
			s.charged -= o.charge
		}
		for _, key := range part {
			delete(s.touched, key)
		}
		s.mu.Unlock()
		prefixes = append(prefixes, ids...)
	}
	return s.dropPrefixes(prefixes)
}
