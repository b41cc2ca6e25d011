package l2

import (
	"errors"
	"fmt"

	"github.com/modelcache/modelcache/internal/third_party/badger"

	"github.com/modelcache/modelcache/errs"
)

// Verify reads every entry and checks its header and chunk checksums.
// Damaged entries are dropped (nothing else is touched) and reported to bad,
// if not nil. It returns how many entries it checked and how many were bad.
func (s *Store) Verify(bad func(key string, err error)) (checked, corrupt int, err error) {
	if err := s.enter(); err != nil {
		return 0, 0, err
	}
	defer s.exit()
	var keys []string
	var badMeta []string
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{metaPrefix}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			key := string(it.Item().Key()[1:])
			if verr := it.Item().Value(func(v []byte) error { _, err := parseMeta(v); return err }); verr != nil {
				badMeta = append(badMeta, key)
				if bad != nil {
					bad(key, verr)
				}
				continue
			}
			keys = append(keys, key)
		}
		return it.Err()
	})
	if err != nil {
		return 0, 0, fmt.Errorf("l2: %s: verify: %w", s.dir, err)
	}
	if len(badMeta) > 0 {
		s.corrupt.Add(uint64(len(badMeta)))
		if err := s.removeEntries(badMeta); err != nil {
			return 0, 0, err
		}
	}
	checked, corrupt = len(badMeta), len(badMeta)
	for _, key := range keys {
		_, gerr := s.get(key, nil)
		checked++
		switch {
		case gerr == nil, errors.Is(gerr, errs.ErrNotFound):
		case errors.Is(gerr, errs.ErrCorrupt), errors.Is(gerr, errs.ErrVersion), errors.Is(gerr, errs.ErrUnsupported):
			corrupt++
			s.corrupt.Add(1)
			if bad != nil {
				bad(key, gerr)
			}
			if err := s.removeEntries([]string{key}); err != nil {
				return checked, corrupt, err
			}
		default:
			return checked, corrupt, fmt.Errorf("l2: %s: verify %s: %w", s.dir, errs.Quote(key), gerr)
		}
	}
	return checked, corrupt, nil
}
