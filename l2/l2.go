package l2

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/modelcache/modelcache/internal/third_party/badger/options"
	"github.com/modelcache/modelcache/internal/third_party/badger/y"
	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/serialize"
)

const (
	metaPrefix    = 'm'
	chunkPrefix   = 'c'
	counterPrefix = 's'
	auxPrefix     = 'x'
	idLen         = 16
	metaFixed     = idLen + 16 // id, write time, expiry; the serialize header follows
	// Values this large or larger go to Badger's value log, keeping the LSM
	// tree (which compaction rewrites again and again) small.
	valueThreshold = 64 << 10
	commitRetries  = 8

	// HighWater and LowWater bound the live charged bytes as fractions of
	// MaxBytes. The gap above HighWater is for garbage awaiting value-log
	// GC: with gcDiscardRatio 0.2 a value-log file holds at most 20% dead
	// bytes before it is rewritten, so live/0.8 ≤ MaxBytes × 1.07.
	HighWater      = 0.85
	LowWater       = 0.80
	gcDiscardRatio = 0.2
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

// Options configures a Store.
type Options struct {
	// Dir is the directory of the store, created if missing. Required.
	Dir string
	// MaxBytes is the disk budget: what the directory may take on disk
	// (as du counts it), beyond a fixed overhead (see FixedOverhead). Live
	// entries are evicted, least recently used first, once their stored
	// bytes pass HighWater of it, down to LowWater, and the value log is
	// garbage-collected so that the space comes back. 0 means no limit.
	MaxBytes int64
	// ChunkSize is the logical size of chunks; default serialize.DefaultChunk.
	ChunkSize int
	// SyncWrites makes every Put durable against power loss before it
	// returns. Without it a Put survives the process dying (the bytes are
	// in the OS), not the machine; Close always syncs.
	SyncWrites bool
	// TTL is how long an entry lives after it is written; 0 means until it
	// is evicted. PutTTL overrides it per entry.
	TTL time.Duration
	// EncryptionKey, if set, encrypts everything at rest with AES (Badger's
	// own encryption): 16, 24 or 32 bytes for AES-128, -192 or -256. A
	// directory written with a key cannot be opened without it.
	EncryptionKey []byte
	// ReserveBytes is the free space a Put leaves on the file system; a Put
	// that would cut into it fails with errs.ErrNoSpace, so that the cache
	// leaves room for the programs beside it and Badger's own files can
	// still be created. Default: twice the memtable size plus one
	// value-log file (see FixedOverhead).
	ReserveBytes int64
	// Logger receives Badger's warnings and errors; default slog.Default().
	Logger *slog.Logger
	// Clock tells the time for TTLs and written-at times; default time.Now.
	Clock func() time.Time

	noBlockCache bool // tests: every table read goes to the file
}

// Validate reports options that no directory could satisfy; Open calls it
// first. Callers use it to tell their own misconfiguration apart from a
// directory that cannot be used.
func (o *Options) Validate() error {
	if o == nil || o.Dir == "" {
		return errors.New("l2: Options.Dir is required")
	}
	if o.MaxBytes < 0 || o.ReserveBytes < 0 || o.TTL < 0 {
		return errors.New("l2: MaxBytes, ReserveBytes and TTL must not be negative")
	}
	if o.MaxBytes != 0 && o.MaxBytes < MinBytes {
		return fmt.Errorf("l2: MaxBytes %d is below the minimum of %d (1 MiB)", o.MaxBytes, MinBytes)
	}
	if k := len(o.EncryptionKey); k != 0 && k != 16 && k != 24 && k != 32 {
		return fmt.Errorf("l2: encryption key of %d bytes; want 16, 24 or 32", k)
	}
	return nil
}

// Value is a decoded entry.
type Value struct {
	DType string
	Shape []uint64
	Data  []byte // a new allocation owned by the caller

	expired bool
}

// EntryInfo describes a stored entry without decoding it.
type EntryInfo struct {
	Key          string
	DType        string
	Shape        []uint64
	LogicalBytes uint64
	StoredBytes  uint64
	Written      time.Time
	Expires      time.Time // zero: never
}

// Stats are the store's contents and its counters since Open.
type Stats struct {
	Entries      int
	LogicalBytes uint64
	StoredBytes  uint64 // encoded chunks
	// ChargedBytes is what the entries are charged against MaxBytes: their
	// encoded chunks and, per entry, its meta record, order-index records
	// and chunk records.
	ChargedBytes uint64
	MaxBytes     int64
	DiskBytes    int64 // the directory's real disk use (du); -1 if it could not be read

	Hits, Misses, Corrupt, Evictions, Expired, Puts, PutErrors uint64
}

// recordOverhead is what Badger keeps on disk for a record beyond its key
// and inline value: entry header and offset in a table block, bloom filter
// bits, index share, value pointer (measured: 200,000 entries with 75-byte
// keys and empty values take 140 bytes each).
const recordOverhead = 40

// entryOverhead is the disk an entry takes beyond its encoded chunks: its
// meta record, its records in the order index, and a record per chunk
// pointing into the value log. Charged
// to the budget, so that a million empty tensors cannot take a 20 MiB cache
// to 93 MiB.
func entryOverhead(keyLen, metaLen, chunks int) uint64 {
	meta := 1 + keyLen + metaLen + recordOverhead
	// The order index: an 'a' record and an 'A' record (and an 'e' record
	// for entries that expire, charged to all for simplicity).
	order := (1 + 8 + keyLen + 24) + (1 + keyLen + 8) + (1 + 8 + keyLen) + 3*recordOverhead
	return uint64(meta+order) + uint64(chunks)*(1+idLen+4+recordOverhead)
}

// orderOf is the order-index record of the entry under key whose meta
// record is metaLen bytes and holds h: what the entry is charged, its
// encoded and logical bytes, its expiry.
func orderOf(key string, metaLen int, h *serialize.Header, expires int64) order {
	return order{
		charge:  h.StoredBytes() + entryOverhead(len(key), metaLen, len(h.Chunks)),
		stored:  h.StoredBytes(),
		logical: h.Length,
		expires: expires,
	}
}

// Store is an open L2 directory. It is safe for concurrent use.
type Store struct {
	db      *badger.DB
	lock    *os.File
	dir     string
	max     int64
	reserve int64
	ttl     time.Duration
	codecs  *serialize.Codecs
	now     func() time.Time // time.Now; tests move it

	// writeMu is held shared by writers and exclusively by removeEntries
	// and compact: Badger refuses writes (ErrBlockedWrites) while DropPrefix
	// runs, and both stop and restart its compactors.
	writeMu sync.RWMutex
	// reclaimMu lets one eviction pass run at a time.
	reclaimMu sync.Mutex

	// mu guards the totals and touched.
	mu      sync.Mutex
	entries int
	logical uint64
	stored  uint64 // encoded chunk bytes
	charged uint64 // what the entries are charged (see entryOverhead)
	touched map[string]struct{}

	// closeMu is held shared by every method while it uses Badger and
	// exclusively by Close, so that Close waits for them and none starts
	// after it (Badger panics when used after Close). Methods take it once,
	// through enter, and call only unexported methods while they hold it: a
	// second shared lock behind a waiting Close would deadlock.
	closeMu sync.RWMutex
	closed  bool // guarded by closeMu

	damage    *Damage // what Open found damaged and repaired
	recovered bool    // Open read every entry (no clean Close before)
	log       *slog.Logger

	clock                                                      atomic.Uint64
	hits, misses, corrupt, evictions, expired, puts, putErrors atomic.Uint64
	// needSweep: chunks were left that no meta record names (an unreadable
	// record was deleted, a failed Put could not remove its chunks); Close
	// leaves no totals, so that the next Open sweeps.
	needSweep atomic.Bool
}

// enter keeps the store open until exit; after Close it is ErrClosed.
func (s *Store) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return fmt.Errorf("l2: %s: %w", s.dir, errs.ErrClosed)
	}
	return nil
}

func (s *Store) exit() { s.closeMu.RUnlock() }

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

func metaKey(key string) []byte { return append([]byte{metaPrefix}, key...) }

func chunkKey(id []byte, i int) []byte {
	k := make([]byte, 0, 1+idLen+4)
	k = append(k, chunkPrefix)
	k = append(k, id...)
	return binary.BigEndian.AppendUint32(k, uint32(i))
}

type meta struct {
	id      []byte
	written int64
	expires int64
	header  *serialize.Header
}

func parseMeta(v []byte) (*meta, error) {
	if len(v) < metaFixed {
		return nil, fmt.Errorf("%w: meta record of %d bytes", errs.ErrCorrupt, len(v))
	}
	h, n, err := serialize.ParseHeader(v[metaFixed:])
	if err != nil {
		return nil, err
	}
	if n != len(v)-metaFixed {
		return nil, fmt.Errorf("%w: %d stray bytes after the header", errs.ErrCorrupt, len(v)-metaFixed-n)
	}
	return &meta{
		id:      bytes.Clone(v[:idLen]),
		written: int64(binary.LittleEndian.Uint64(v[idLen:])),
		expires: int64(binary.LittleEndian.Uint64(v[idLen+8:])),
		header:  h,
	}, nil
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

// expiry is when an entry written at now with time to live ttl expires, in
// Unix nanoseconds; a ttl beyond year 2262 (2,500,000h) is never, not a
// wrap into the past that expires everything at once.
func expiry(now time.Time, ttl time.Duration) int64 {
	n := now.UnixNano()
	if int64(ttl) > math.MaxInt64-n {
		return math.MaxInt64
	}
	return n + int64(ttl)
}

func newID() []byte {
	id := make([]byte, idLen)
	_, _ = rand.Read(id) // crypto/rand.Read never fails on supported platforms
	return id
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

// enforceBudget evicts least recently used entries, never keep, once the
// stored bytes pass HighWater of the budget, down to LowWater, and reclaims
// their space.
func (s *Store) enforceBudget(keep string) error {
	if s.max == 0 {
		return nil
	}
	s.mu.Lock()
	over := s.charged > uint64(float64(s.max)*HighWater)
	s.mu.Unlock()
	if !over {
		return nil
	}
	s.reclaimMu.Lock()
	defer s.reclaimMu.Unlock()
	victims, err := s.pickVictims(keep, uint64(float64(s.max)*LowWater))
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

// Get reads and decodes the entry under key. A missing entry is
// errs.ErrNotFound; a damaged one is errs.ErrCorrupt, and is dropped.
func (s *Store) Get(key string) (*Value, error) {
	return s.GetInto(key, nil)
}

// Alloc returns the buffer an entry of n logical bytes is decoded into; it
// must be exactly n bytes long. It is called once the entry's header has
// been read, so a miss allocates nothing.
type Alloc func(dtype string, shape []uint64, n uint64) ([]byte, error)

// GetInto is Get that decodes into the buffer alloc returns (nil: a new
// one), so that a caller's own memory (pinned, a staging area) receives the
// bytes with no copy. On an error the buffer's contents are undefined.
func (s *Store) GetInto(key string, alloc Alloc) (*Value, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	v, err := s.get(key, alloc)
	if err == nil && v.expired {
		s.expired.Add(1)
		if derr := s.removeEntries([]string{key}); derr != nil {
			return nil, derr
		}
		err = errs.ErrNotFound
	}
	switch {
	case err == nil:
		s.hits.Add(1)
		s.touch(key)
		return v, nil
	case errors.Is(err, errs.ErrNotFound):
		s.misses.Add(1)
	}
	return nil, s.dropDamaged(key, err)
}

func (s *Store) readMeta(key string) (*meta, error) {
	var m *meta
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		m, err = metaIn(txn, key)
		return err
	})
	return m, err
}

// liveMeta is readMeta that takes an expired entry for a missing one.
func (s *Store) liveMeta(key string) (*meta, error) {
	m, err := s.readMeta(key)
	if err == nil && m.expires != 0 && s.now().UnixNano() >= m.expires {
		err = errs.ErrNotFound
	}
	return m, err
}

func metaIn(txn *badger.Txn, key string) (*meta, error) {
	item, err := txn.Get(metaKey(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, errs.ErrNotFound
	}
	if err != nil {
		return nil, damaged(err)
	}
	var m *meta
	err = item.Value(func(v []byte) error {
		m, err = parseMeta(v)
		return err
	})
	return m, damaged(err)
}

// damaged marks Badger's own checksum failures as corruption of the entry.
func damaged(err error) error {
	if errors.Is(err, y.ErrChecksumMismatch) && !errors.Is(err, errs.ErrCorrupt) {
		return fmt.Errorf("%w: %w", errs.ErrCorrupt, err)
	}
	return err
}

func (s *Store) get(key string, alloc Alloc) (*Value, error) {
	var m *meta
	var out []byte
	var missing atomic.Bool
	// readChunk decodes chunk i. Chunk keys are immutable, so chunks may be
	// read in snapshots of their own; a chunk gone missing means a
	// concurrent replace or delete, told apart from damage below.
	readChunk := func(txn *badger.Txn, i int) error {
		h := m.header
		start := i * int(h.ChunkSize)
		dst := out[start : start+h.ChunkLen(i)]
		item, err := txn.Get(chunkKey(m.id, i))
		if errors.Is(err, badger.ErrKeyNotFound) {
			missing.Store(true)
			return fmt.Errorf("%w: chunk %d missing", errs.ErrCorrupt, i)
		}
		if err != nil {
			return damaged(err)
		}
		return damaged(item.Value(func(v []byte) error { return s.codecs.DecodeChunk(h, i, dst, v) }))
	}
	expired := false
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		if m, err = metaIn(txn, key); err != nil {
			return err
		}
		if m.expires != 0 && s.now().UnixNano() >= m.expires {
			expired = true
			return nil
		}
		if alloc == nil {
			out = make([]byte, m.header.Length)
		} else {
			h := m.header
			if out, err = alloc(h.DType, h.Shape, h.Length); err != nil {
				return err
			}
			if uint64(len(out)) != h.Length {
				return fmt.Errorf("l2: buffer of %d bytes for an entry of %d", len(out), h.Length)
			}
		}
		// Most tensors are one chunk: read it in the meta's transaction,
		// on this goroutine.
		if len(m.header.Chunks) == 1 {
			return readChunk(txn, 0)
		}
		return nil
	})
	if err == nil && !expired && len(m.header.Chunks) > 1 {
		var g errgroup.Group
		g.SetLimit(min(len(m.header.Chunks), 8))
		for i := range m.header.Chunks {
			g.Go(func() error {
				return s.db.View(func(txn *badger.Txn) error { return readChunk(txn, i) })
			})
		}
		err = g.Wait()
	}
	switch {
	case expired:
		return &Value{expired: true}, nil
	case err == nil:
		return &Value{DType: m.header.DType, Shape: m.header.Shape, Data: out}, nil
	case missing.Load():
		if cur, merr := s.readMeta(key); merr != nil || !bytes.Equal(cur.id, m.id) {
			return nil, errs.ErrNotFound
		}
	}
	return nil, err
}

// Stat describes the entry under key without reading its chunks.
func (s *Store) Stat(key string) (*EntryInfo, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	m, err := s.liveMeta(key)
	if err != nil {
		return nil, fmt.Errorf("l2: %s: stat %s: %w", s.dir, errs.Quote(key), err)
	}
	return infoOf(key, m), nil
}

func infoOf(key string, m *meta) *EntryInfo {
	info := &EntryInfo{
		Key: key, DType: m.header.DType, Shape: m.header.Shape,
		LogicalBytes: m.header.Length, StoredBytes: m.header.StoredBytes(),
		Written: time.Unix(0, m.written),
	}
	if m.expires != 0 {
		info.Expires = time.Unix(0, m.expires)
	}
	return info
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

// Stats returns the store's contents and counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{Entries: s.entries, LogicalBytes: s.logical, StoredBytes: s.stored, ChargedBytes: s.charged, MaxBytes: s.max}
	s.mu.Unlock()
	if du, err := s.DiskUsage(); err == nil {
		st.DiskBytes = du
	} else {
		st.DiskBytes = -1
	}
	st.Expired = s.expired.Load()
	st.Hits, st.Misses, st.Corrupt = s.hits.Load(), s.misses.Load(), s.corrupt.Load()
	st.Evictions, st.Puts, st.PutErrors = s.evictions.Load(), s.puts.Load(), s.putErrors.Load()
	return st
}

// Range calls fn for every live entry whose key starts with prefix, in key
// order, until fn returns false. Damaged meta records are skipped (Verify
// and Get report them).
func (s *Store) Range(prefix string, fn func(*EntryInfo) bool) error {
	infos, err := s.listEntries(prefix)
	if err != nil {
		return err
	}
	// fn runs outside the transaction and the close guard, so it may use
	// the store.
	for _, info := range infos {
		if !fn(info) {
			break
		}
	}
	return nil
}

// listEntries lists the live entries whose key starts with prefix.
func (s *Store) listEntries(prefix string) ([]*EntryInfo, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	now := s.now().UnixNano()
	var infos []*EntryInfo
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: metaKey(prefix), PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := string(item.Key()[1:])
			_ = item.Value(func(v []byte) error {
				if m, err := parseMeta(v); err == nil && (m.expires == 0 || now < m.expires) {
					infos = append(infos, infoOf(key, m))
				}
				return nil
			})
		}
		return it.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("l2: %s: %w", s.dir, err)
	}
	return infos, nil
}

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

// DiskUsage is the disk space the directory takes now, as du counts it.
func (s *Store) DiskUsage() (int64, error) {
	return DiskUsage(s.dir)
}

// DiskUsage is the disk space the files under dir take, as du counts it.
func DiskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += allocated(fi)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("l2: %s: disk usage: %w", dir, err)
	}
	return total, nil
}

// Damage is what Open found damaged and repaired, for reports.
func (s *Store) Damage() Damage { return *s.damage }

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

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

func (b badgerLogger) Errorf(f string, a ...any)   { b.l.Error(fmt.Sprintf(f, a...)) }
func (b badgerLogger) Warningf(f string, a ...any) { b.l.Warn(fmt.Sprintf(f, a...)) }
func (badgerLogger) Infof(string, ...any)          {}
func (badgerLogger) Debugf(string, ...any)         {}

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
