// The disk budget, expiry and garbage collection.

package l2

import (
	"fmt"
)

// enforceBudget evicts least recently used entries, never keep, once the
// stored bytes pass highWater of the budget, down to lowWater, and reclaims
// their space.
func (s *Store) enforceBudget(keep string) error {
	if s.max == 0 {
		return nil
	}
	s.mu.Lock()
	over := s.charged > uint64(float64(s.max)*highWater)
	s.mu.Unlock()
	if !over {
		return nil
	}
	s.reclaimMu.Lock()
	defer s.reclaimMu.Unlock()
	victims, err := s.pickVictims(keep, uint64(float64(s.max)*lowWater))
	if err != nil {
		return fmt.Errorf("l2: %s: picking entries to evict: %w", s.dir, err)
	}
	if len(victims) == 0 {
		return nil
	}
	if err := s.removeEntries(victims); err != nil {
		return err
	}
	s.evictions.Add(uint64(len(victims)))
	s.collectGarbage()
	return nil
}

// pickVictims lists the least recently used entries, other than keep, whose
// removal brings the stored bytes down to target.
func (s *Store) pickVictims(keep string, target uint64) ([]string, error) {
	if err := s.flushTouches(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	charged := s.charged
	s.mu.Unlock()
	if charged <= target {
		return nil, nil
	}
	return s.oldest(keep, charged-target)
}

// collectGarbage rewrites value-log files whose dead share passed
// gcDiscardRatio, until none is left. Errors only mean there was nothing to
// do or another GC is running.
func (s *Store) collectGarbage() {
	for s.db.RunValueLogGC(gcDiscardRatio) == nil {
	}
}

// GC evicts down to the budget and reclaims the disk space of everything
// removed so far.
func (s *Store) GC() error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := s.removeExpired(); err != nil {
		return err
	}
	if err := s.enforceBudget(""); err != nil {
		return err
	}
	if err := s.compact(); err != nil {
		return fmt.Errorf("l2: %s: compacting: %w", s.dir, err)
	}
	s.collectGarbage()
	return nil
}

// compact compacts the LSM tree whole: deleted records leave tombstones
// until a compaction meets them, and GC wants the disk back now. It holds
// writeMu exclusively, as DropPrefix does: both stop and restart Badger's
// compactors, which must not happen from two goroutines at once.
func (s *Store) compact() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.db.CompactLevel0(); err != nil {
		return err
	}
	return s.db.Flatten(1)
}

// removeExpired removes the entries whose time to live has passed.
func (s *Store) removeExpired() error {
	keys, err := s.expiredBy(s.now().UnixNano())
	if err != nil {
		return fmt.Errorf("l2: %s: finding expired entries: %w", s.dir, err)
	}
	if len(keys) == 0 {
		return nil
	}
	s.expired.Add(uint64(len(keys)))
	return s.removeEntries(keys)
}
