package l2

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/modelcache/modelcache/internal/third_party/badger"

	"github.com/modelcache/modelcache/errs"
)

// Records are small named values a program keeps in the store beside the
// entries: outside the disk budget, never evicted or expired, removed only
// when set to nil. They are not entries: Range, Stats and Verify do not see
// them. tier keeps its lifetime counters, the directory's key mode and
// files' content digests there.
type Records struct{ s *Store }

// Records returns the store's records.
func (s *Store) Records() *Records { return &Records{s: s} }

// write runs fn in a read-write transaction, as every writer of the store
// does: within the close guard and beside other writers.
func (r *Records) write(fn func(txn *badger.Txn) error) error {
	s := r.s
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	return s.update(fn)
}

// Add adds deltas to named counters, in one transaction. Additions wrap
// around: a counter that comes to 0 is removed, so adding the two's
// complement of its value (-v) removes it.
func (r *Records) Add(deltas map[string]uint64) error {
	s := r.s
	err := r.write(func(txn *badger.Txn) error {
		for name, d := range deltas {
			k := append([]byte{counterPrefix}, name...)
			var v uint64
			item, err := txn.Get(k)
			switch {
			case err == nil:
				_ = item.Value(func(b []byte) error {
					if len(b) == 8 {
						v = binary.LittleEndian.Uint64(b)
					}
					return nil
				})
			case !errors.Is(err, badger.ErrKeyNotFound):
				return err
			}
			if v+d == 0 {
				if err := txn.Delete(k); err != nil {
					return err
				}
				continue
			}
			if err := txn.Set(k, binary.LittleEndian.AppendUint64(nil, v+d)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("l2: %s: counters: %w", s.dir, err)
	}
	return nil
}

// Counts returns the counters Add keeps.
func (r *Records) Counts() (map[string]uint64, error) {
	s := r.s
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	out := map[string]uint64{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{counterPrefix}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			name := string(it.Item().Key()[1:])
			_ = it.Item().Value(func(b []byte) error {
				if len(b) == 8 {
					out[name] = binary.LittleEndian.Uint64(b)
				}
				return nil
			})
		}
		return it.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("l2: %s: counters: %w", s.dir, err)
	}
	return out, nil
}

// Set stores value under name; a nil value deletes it.
func (r *Records) Set(name string, value []byte) error {
	s := r.s
	k := append([]byte{auxPrefix}, name...)
	err := r.write(func(txn *badger.Txn) error {
		if value == nil {
			return txn.Delete(k)
		}
		return txn.Set(k, value)
	})
	if err != nil {
		return fmt.Errorf("l2: %s: record %s: %w", s.dir, errs.Quote(name), err)
	}
	return nil
}

// Get returns the records whose names start with prefix.
func (r *Records) Get(prefix string) (map[string][]byte, error) {
	s := r.s
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	out := map[string][]byte{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: append([]byte{auxPrefix}, prefix...)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[string(it.Item().Key()[1:])] = v
		}
		return it.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("l2: %s: records: %w", s.dir, err)
	}
	return out, nil
}
