package l2

import (
	badger "github.com/modelcache/modelcache/internal/third_party/badger"
)

// Prefetch asks the operating system to start reading the entry under key
// from disk, without waiting: a Get soon after finds its chunks in the page
// cache. A reader that knows what it reads next (a whole-model load)
// announces it ahead, so that the disk reads large ranges, several at once,
// while earlier entries are decoded. A missing entry or a failure is
// ignored: prefetching is advice.
func (s *Store) Prefetch(key string) {
	if s.enter() != nil {
		return
	}
	defer s.exit()
	_ = s.db.View(func(txn *badger.Txn) error {
		m, err := metaIn(txn, key)
		if err != nil {
			return err
		}
		for i := range m.header.Chunks {
			item, err := txn.Get(chunkKey(m.id, i))
			if err != nil {
				return err
			}
			if err := item.PrefetchValue(); err != nil {
				return err
			}
		}
		return nil
	})
}
