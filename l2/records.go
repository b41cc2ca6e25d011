// Records kept beside the entries, outside the budget, for the tier above.

package l2

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/modelcache/modelcache/internal/third_party/badger"

	"github.com/modelcache/modelcache/errs"
)

// AddCounters adds deltas to named counters kept in the store for its
// whole life (tier keeps its hit and miss counts there).
func (s *Store) AddCounters(deltas map[string]uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	err := s.update(func(txn *badger.Txn) error {
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

// Counters returns the counters AddCounters keeps.
func (s *Store) Counters() (map[string]uint64, error) {
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

// SetAux stores a small record beside the entries, outside the disk budget
// and never evicted (tier keeps the content digests of files there); a nil
// value deletes it.
func (s *Store) SetAux(name string, value []byte) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	s.writeMu.RLock()
	defer s.writeMu.RUnlock()
	k := append([]byte{auxPrefix}, name...)
	err := s.update(func(txn *badger.Txn) error {
		if value == nil {
			return txn.Delete(k)
		}
		return txn.Set(k, value)
	})
	if err != nil {
		return fmt.Errorf("l2: %s: aux %s: %w", s.dir, errs.Quote(name), err)
	}
	return nil
}

// Aux returns the records SetAux stored under names starting with prefix.
func (s *Store) Aux(prefix string) (map[string][]byte, error) {
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
		return nil, fmt.Errorf("l2: %s: aux: %w", s.dir, err)
	}
	return out, nil
}
