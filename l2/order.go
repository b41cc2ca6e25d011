package l2

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/modelcache/modelcache/internal/third_party/badger"
)

// The order index lives in Badger beside the entries, so that Open reads
// none of it after a clean Close: its time and memory do not grow with the
// number of entries.
//
//	'a' + tick + key    -> charge, stored, logical, expires   oldest first
//	'A' + key           -> tick                       where key's 'a' record is
//	'e' + expires + key -> (empty)                    entries by expiry
//	'T'                 -> entries, logical, charged, stored  totals, by Close
//
// A read moves its entry to the newest tick lazily: touches wait in a
// bounded set, applied in one batch when it fills, before an eviction picks
// victims, and at Close.
const (
	orderPrefix  = 'a'
	tickPrefix   = 'A'
	expiryPrefix = 'e'
	totalsPrefix = 'T'
	maxTouches   = 4096
)

// order is an entry's record in the order index: what it is charged
// against the budget (see entryOverhead), its encoded and logical bytes,
// and when it expires.
type order struct {
	charge, stored, logical uint64
	expires                 int64
}

func (o order) encode() []byte {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b, o.charge)
	binary.BigEndian.PutUint64(b[8:], o.stored)
	binary.BigEndian.PutUint64(b[16:], o.logical)
	binary.BigEndian.PutUint64(b[24:], uint64(o.expires))
	return b
}

func decodeOrder(b []byte) (order, error) {
	if len(b) != 32 {
		return order{}, fmt.Errorf("order record of %d bytes", len(b))
	}
	return order{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]),
		binary.BigEndian.Uint64(b[16:]), int64(binary.BigEndian.Uint64(b[24:]))}, nil
}

func orderKey(tick uint64, key string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{orderPrefix}, tick)
	return append(k, key...)
}

func tickKey(key string) []byte { return append([]byte{tickPrefix}, key...) }

func expiryKey(expires int64, key string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{expiryPrefix}, uint64(expires))
	return append(k, key...)
}

// unlink removes key's records from the order index in txn and returns
// its order; ok is false if it had none.
func unlink(txn *badger.Txn, key string) (o order, ok bool, err error) {
	item, err := txn.Get(tickKey(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return order{}, false, nil
	}
	if err != nil {
		return order{}, false, err
	}
	var tick uint64
	if err := item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("tick record of %d bytes", len(v))
		}
		tick = binary.BigEndian.Uint64(v)
		return nil
	}); err != nil {
		return order{}, false, err
	}
	ok2 := true
	item, err = txn.Get(orderKey(tick, key))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
		ok2 = false
	case err != nil:
		return order{}, false, err
	default:
		if err := item.Value(func(v []byte) error { o, err = decodeOrder(v); return err }); err != nil {
			return order{}, false, err
		}
	}
	if err := errors.Join(txn.Delete(tickKey(key)), txn.Delete(orderKey(tick, key))); err != nil {
		return order{}, false, err
	}
	if ok2 && o.expires != 0 {
		if err := txn.Delete(expiryKey(o.expires, key)); err != nil {
			return order{}, false, err
		}
	}
	return o, ok2, nil
}

// link writes key's records to the order index in txn, at tick.
func link(txn *badger.Txn, key string, tick uint64, o order) error {
	err := errors.Join(
		txn.Set(orderKey(tick, key), o.encode()),
		txn.Set(tickKey(key), binary.BigEndian.AppendUint64(nil, tick)))
	if err == nil && o.expires != 0 {
		err = txn.Set(expiryKey(o.expires, key), nil)
	}
	return err
}

// touch marks key read: it moves to the newest tick at the next flush.
func (s *Store) touch(key string) {
	s.mu.Lock()
	s.touched[key] = struct{}{}
	full := len(s.touched) >= maxTouches
	s.mu.Unlock()
	if full {
		if err := s.flushTouches(); err != nil {
			s.log.Warn("l2: recording reads for LRU failed", "dir", s.dir, "err", err)
		}
	}
}

// flushTouches moves every entry read since the last flush to the newest
// ticks, in the order of nothing in particular (they were all read since).
func (s *Store) flushTouches() error {
	s.mu.Lock()
	keys := make([]string, 0, len(s.touched))
	for k := range s.touched {
		keys = append(keys, k)
	}
	clear(s.touched)
	s.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	const batch = 500 // well inside Badger's transaction limits
	for start := 0; start < len(keys); start += batch {
		part := keys[start:min(start+batch, len(keys))]
		err := s.update(func(txn *badger.Txn) error {
			for _, key := range part {
				o, ok, err := unlink(txn, key)
				if err != nil {
					return err
				}
				if ok {
					if err := link(txn, key, s.clock.Add(1), o); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// oldest lists entries from the least recently used, skipping keep, until
// their charges reach excess.
func (s *Store) oldest(keep string, excess uint64) ([]string, error) {
	var victims []string
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{orderPrefix}})
		defer it.Close()
		for it.Rewind(); it.Valid() && excess > 0; it.Next() {
			key := string(it.Item().Key()[9:])
			if key == keep {
				continue
			}
			var o order
			if err := it.Item().Value(func(v []byte) error { var err error; o, err = decodeOrder(v); return err }); err != nil {
				return err
			}
			victims = append(victims, key)
			excess -= min(excess, o.charge)
		}
		return it.Err()
	})
	return victims, err
}

// expiredBy lists the entries whose time to live ended by now.
func (s *Store) expiredBy(now int64) ([]string, error) {
	var keys []string
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{expiryPrefix}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if int64(binary.BigEndian.Uint64(k[1:9])) > now {
				break
			}
			keys = append(keys, string(k[9:]))
		}
		return it.Err()
	})
	return keys, err
}

// lastTick is the newest tick in the order index, 0 if it is empty.
func (s *Store) lastTick() (uint64, error) {
	var tick uint64
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{orderPrefix}, Reverse: true, PrefetchValues: false})
		defer it.Close()
		it.Seek([]byte{orderPrefix, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		if it.Valid() {
			tick = binary.BigEndian.Uint64(it.Item().Key()[1:9])
		}
		return it.Err()
	})
	return tick, err
}

// takeTotals reads the totals a clean Close wrote and removes them, so that
// a crash from now on leaves none; ok is false if there were none.
func (s *Store) takeTotals() (ok bool, err error) {
	err = s.update(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte{totalsPrefix})
		if errors.Is(err, badger.ErrKeyNotFound) {
			ok = false
			return nil
		}
		if err != nil {
			return err
		}
		if err := item.Value(func(v []byte) error {
			if len(v) != 32 {
				return fmt.Errorf("totals record of %d bytes", len(v))
			}
			s.entries = int(binary.BigEndian.Uint64(v))
			s.logical = binary.BigEndian.Uint64(v[8:])
			s.charged = binary.BigEndian.Uint64(v[16:])
			s.stored = binary.BigEndian.Uint64(v[24:])
			return nil
		}); err != nil {
			return err
		}
		ok = true
		return txn.Delete([]byte{totalsPrefix})
	})
	return ok, err
}

// putTotals records the totals for the next Open; Close calls it last.
func (s *Store) putTotals() error {
	s.mu.Lock()
	v := binary.BigEndian.AppendUint64(nil, uint64(s.entries))
	v = binary.BigEndian.AppendUint64(v, s.logical)
	v = binary.BigEndian.AppendUint64(v, s.charged)
	v = binary.BigEndian.AppendUint64(v, s.stored)
	s.mu.Unlock()
	return s.update(func(txn *badger.Txn) error { return txn.Set([]byte{totalsPrefix}, v) })
}
