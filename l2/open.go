// Opening and closing: Badger's file sizes from the budget, the checks
// before Badger opens, and what Open reads to know the store's contents.

package l2

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/modelcache/modelcache/internal/third_party/badger/options"
	"github.com/modelcache/modelcache/internal/third_party/badger/y"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/serialize"
)

// sizes derives Badger's file sizes from the budget, or without one from
// the free space at open, so that its fixed costs (memtable logs, the
// value-log file being written, which GC cannot touch)
// stay a small part of what the store may use. A value-log file holds at
// least two chunks: Badger refuses a value larger than the file.
func sizes(maxBytes int64, chunk int) (memTable, vlogFile int64) {
	minVlog := max(2*int64(chunk), 1<<20)
	if maxBytes == 0 {
		return 16 << 20, 1<<30 - 1
	}
	return min(max(maxBytes/32, 4<<20), 16<<20), min(max(maxBytes/32, minVlog), 1<<30-1)
}

// sizesAt is sizes for a store in dir: without a budget, a file system
// with less than 8 GiB free bounds what the store can use, so it sizes the
// files.
func sizesAt(dir string, maxBytes int64, chunk int) (memTable, vlogFile int64) {
	if maxBytes == 0 {
		if free, err := freeSpace(dir); err == nil && free < 8<<30 {
			maxBytes = max(free, 1)
		}
	}
	return sizes(maxBytes, chunk)
}

// MinBytes is the smallest budget Open accepts: below it, the budget would
// hold next to nothing beside Badger's own files. Any entry a budget can
// hold fits (a value-log file holds two chunks whatever the budget).
const MinBytes = 1 << 20

// FixedOverhead is the disk the store may use beyond MaxBytes × 1.1 for a
// given budget and chunk size (0: the default): two memtable write-ahead
// logs (the active one and one being flushed) and the head value-log file,
// each at most twice its size limit (Badger writes them through mmap, where
// a block the disk cannot give is a SIGBUS, so their blocks are allocated
// ahead of the writes, never left sparse), Badger's 1 MiB DISCARD file and
// the LSM's own tables, manifest and key registry (bounded at 8 MiB here,
// as values under 64 KiB and the keys are all that live there besides).
func FixedOverhead(maxBytes int64, chunkSize int) int64 {
	if chunkSize == 0 {
		chunkSize = serialize.DefaultChunk
	}
	mt, vf := sizes(maxBytes, chunkSize)
	return 2*2*mt + 2*vf + 1<<20 + 8<<20
}

// allocStep is how far ahead of its writes Badger allocates a log (our
// patch, see internal/third_party/badger/PATCHES.md).
const allocStep = 16 << 20

// openBytes is the free space Open needs: the allocated start of a new
// memtable log and of a new head value-log file, and the DISCARD file.
func openBytes(memTable, vlogFile int64) int64 {
	return min(2*memTable, allocStep) + min(2*vlogFile, allocStep) + 1<<20
}

// Open opens or creates the store in opts.Dir.
func Open(opts *Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("l2: %w", err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	chunk := opts.ChunkSize
	if chunk == 0 {
		chunk = serialize.DefaultChunk
	}
	memTable, vlogFile := sizesAt(opts.Dir, opts.MaxBytes, chunk)
	if err := errors.Join(removeEmptyLogs(opts.Dir), checkOpenSpace(opts.Dir, openBytes(memTable, vlogFile))); err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, err
	}
	bo := badger.DefaultOptions(opts.Dir).
		WithMemTableSize(memTable).
		WithValueLogFileSize(vlogFile).
		WithLogger(badgerLogger{logger.With("component", "l2", "dir", opts.Dir)}).
		WithCompression(options.None). // serialize compresses, per chunk
		WithBlockCacheSize(blockCacheSize(opts)).
		WithValueThreshold(valueThreshold).
		WithSyncWrites(opts.SyncWrites).
		WithMetricsEnabled(false).
		// A damaged table block is an error on read, not garbage or a panic.
		WithChecksumVerificationMode(options.OnBlockRead).
		// Badger's checksum of each value-log entry is not verified on
		// read: every value we store carries its own (a CRC-32C over each
		// chunk's decoded bytes, a header CRC in meta records), checked end
		// to end, and checking the stored bytes too cost 10% of a load. A
		// damaged entry header is an error, not a panic (Badger patch 9).
		WithVerifyValueChecksum(false)
	if len(opts.EncryptionKey) > 0 {
		bo = bo.WithEncryptionKey(opts.EncryptionKey).WithIndexCacheSize(16 << 20)
	}
	damage, err := repair(opts.Dir, bo, logger)
	var db *badger.DB
	if err == nil {
		db, err = badger.Open(bo)
		if err != nil && !environmental(err) && damage.SetAside == "" {
			// Damage the checks before could not see: a cache can be
			// rebuilt, a directory that never opens cannot be used.
			if err = setAside(opts.Dir, err.Error(), damage, logger); err == nil {
				db, err = badger.Open(bo)
			}
		}
	}
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("l2: open %s: %w: %w", opts.Dir, errs.ErrWrongKey, err)
		}
		return nil, fmt.Errorf("l2: open %s: %w", opts.Dir, err)
	}
	codecs, err := serialize.New(&serialize.Options{ChunkSize: opts.ChunkSize})
	if err != nil {
		db.Close()
		lock.Close()
		return nil, err
	}
	reserve := opts.ReserveBytes
	if reserve == 0 {
		reserve = 2*memTable + vlogFile
	}
	s := &Store{db: db, lock: lock, dir: opts.Dir, max: opts.MaxBytes, reserve: reserve, ttl: opts.TTL,
		codecs: codecs, now: opts.Clock, touched: make(map[string]struct{}), damage: damage, log: logger}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// load finds the totals a clean Close left, or, after a crash (or in a
// directory from before the order index), scans the meta records: it drops
// entries whose meta record is corrupt, sweeps chunks that no meta record
// names (left by a crash between writing chunks and committing), counts the
// totals and rebuilds the order index, older writes first.
func (s *Store) load() error {
	clean, err := s.takeTotals()
	if err != nil {
		return fmt.Errorf("l2: %s: reading totals: %w", s.dir, err)
	}
	if clean {
		tick, err := s.lastTick()
		if err != nil {
			return fmt.Errorf("l2: %s: reading the order index: %w", s.dir, err)
		}
		s.clock.Store(tick)
		return s.removeExpired()
	}
	return s.recover()
}

// recover is load after a crash: every meta record is read.
func (s *Store) recover() error {
	s.recovered = true
	type rec struct {
		key     string
		written int64
		order   order
	}
	var recs []rec
	live := make(map[string]bool)
	var badMeta [][]byte
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{metaPrefix}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := string(item.Key()[1:])
			err := item.Value(func(v []byte) error {
				m, err := parseMeta(v)
				if err != nil {
					return err
				}
				live[string(m.id)] = true
				recs = append(recs, rec{key, m.written, orderOf(key, len(v), m.header, m.expires)})
				return nil
			})
			if errors.Is(err, errs.ErrCorrupt) || errors.Is(err, errs.ErrVersion) {
				badMeta = append(badMeta, item.KeyCopy(nil))
				continue
			}
			if err != nil {
				return err
			}
		}
		return it.Err()
	})
	// An iteration cut short by a block Badger could not read (damage since
	// Open repaired the tables) saw only part of the entries: keep going with
	// those, and sweep nothing on the strength of what it did not see.
	complete := true
	if err != nil && errors.Is(err, y.ErrChecksumMismatch) {
		s.log.Error("l2: reading the index stopped at a damaged block; entries after it are not counted and nothing is swept until the next open", "dir", s.dir, "err", err)
		complete, err = false, nil
	}
	if err != nil {
		return fmt.Errorf("l2: %s: reading index: %w", s.dir, err)
	}
	for _, r := range recs {
		s.entries++
		s.logical += r.order.logical
		s.stored += r.order.stored
		s.charged += r.order.charge
	}
	// The order index, anew: older writes are less recently used.
	if err := s.dropPrefixes([][]byte{{orderPrefix}, {tickPrefix}, {expiryPrefix}}); err != nil {
		return err
	}
	slices.SortFunc(recs, func(a, b rec) int { return cmp.Compare(a.written, b.written) })
	const batch = 500
	for start := 0; start < len(recs); start += batch {
		part := recs[start:min(start+batch, len(recs))]
		err := s.update(func(txn *badger.Txn) error {
			for i, r := range part {
				if err := link(txn, r.key, uint64(start+i+1), r.order); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("l2: %s: rebuilding the order index: %w", s.dir, err)
		}
	}
	s.clock.Store(uint64(len(recs)))
	orphans := make(map[string]bool)
	var strays [][]byte
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{chunkPrefix}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			switch {
			case len(k) != 1+idLen+4:
				strays = append(strays, it.Item().KeyCopy(nil))
			case !live[string(k[1:1+idLen])]:
				orphans[string(k[:1+idLen])] = true
			}
		}
		return it.Err()
	})
	if err != nil && errors.Is(err, y.ErrChecksumMismatch) {
		s.log.Error("l2: sweeping chunks stopped at a damaged block; nothing is swept until the next open", "dir", s.dir, "err", err)
		complete, err = false, nil
	}
	if err != nil {
		return fmt.Errorf("l2: %s: sweeping: %w", s.dir, err)
	}
	if !complete {
		orphans, strays = nil, nil
	}
	s.corrupt.Add(uint64(len(badMeta)))
	if err := s.deleteKeys(append(badMeta, strays...)); err != nil {
		return err
	}
	if err := s.removeExpired(); err != nil {
		return err
	}
	prefixes := make([][]byte, 0, len(orphans))
	for p := range orphans {
		prefixes = append(prefixes, []byte(p))
	}
	return s.dropPrefixes(prefixes)
}

func blockCacheSize(o *Options) int64 {
	if o.noBlockCache {
		return 0
	}
	return 16 << 20
}

// checkOpenSpace refuses to open when the file system cannot hold the
// files Badger creates at open. Badger would fail too (its files are
// allocated before they are mapped), but with an error that names neither
// the cause nor what is needed.
func checkOpenSpace(dir string, need int64) error {
	free, err := freeSpace(dir)
	if err != nil || free >= need {
		return nil
	}
	return fmt.Errorf("l2: open %s: %w: %d bytes free, opening needs %d", dir, errs.ErrNoSpace, free, need)
}

// Close syncs and closes the store and releases the directory lock.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// The totals and the order index, complete, spare the next Open a scan;
	// without them it recovers as after a crash.
	err := s.flushTouches()
	if err == nil && !s.needSweep.Load() {
		err = s.putTotals()
	}
	if err != nil {
		s.log.Warn("l2: saving the order index failed; the next open reads every entry", "dir", s.dir, "err", err)
	}
	sawDamage := s.db.SawDamage() || s.corrupt.Load() > 0
	if err = s.db.Close(); err == nil && !sawDamage {
		markTablesClean(s.dir)
	}
	s.codecs.Close()
	if s.lock != nil {
		err = errors.Join(err, s.lock.Close())
	}
	if err != nil {
		return fmt.Errorf("l2: close %s: %w", s.dir, err)
	}
	return nil
}

// badgerLogger passes Badger's warnings and errors on; its info and debug
// chatter is of no use to our users.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) { b.l.Error(fmt.Sprintf(f, a...)) }

func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }

func (badgerLogger) Infof(string, ...any) {}

func (badgerLogger) Debugf(string, ...any) {}
