package l2

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/serialize"
)

const (
	metaPrefix  = 'm'
	chunkPrefix = 'c'
	idLen       = 16
	metaFixed   = idLen + 8 // id, write time; the serialize header follows
	// Values this large or larger go to Badger's value log, keeping the LSM
	// tree (which compaction rewrites again and again) small.
	valueThreshold = 64 << 10
	commitRetries  = 8
)

// Options configures a Store.
type Options struct {
	// Dir is the directory of the store, created if missing. Required.
	Dir string
	// MaxBytes is the budget for stored (encoded) bytes; 0 means no limit.
	MaxBytes int64
	// ChunkSize is the logical size of chunks; default serialize.DefaultChunk.
	ChunkSize int
	// SyncWrites makes every Put durable against power loss before it
	// returns. Without it a Put survives the process dying (the bytes are
	// in the OS), not the machine; Close always syncs.
	SyncWrites bool
	// Logger receives Badger's warnings and errors; default slog.Default().
	Logger *slog.Logger
}

func (o *Options) validate() error {
	if o == nil || o.Dir == "" {
		return errors.New("l2: Options.Dir is required")
	}
	if o.MaxBytes < 0 {
		return fmt.Errorf("l2: MaxBytes %d is negative", o.MaxBytes)
	}
	return nil
}

// Value is a decoded entry.
type Value struct {
	DType string
	Shape []uint64
	Data  []byte // a new allocation owned by the caller
}

// EntryInfo describes a stored entry without decoding it.
type EntryInfo struct {
	Key          string
	DType        string
	Shape        []uint64
	LogicalBytes uint64
	StoredBytes  uint64
	Written      time.Time
}

// Stats are the store's contents and its counters since Open.
type Stats struct {
	Entries      int
	LogicalBytes uint64
	StoredBytes  uint64
	MaxBytes     int64

	Hits, Misses, Corrupt, Evictions, Puts, PutErrors uint64
}

type indexEntry struct {
	logical, stored uint64
	lastUse         uint64 // logical clock, higher is more recent
}

// Store is an open L2 directory. It is safe for concurrent use.
type Store struct {
	db     *badger.DB
	lock   *os.File
	dir    string
	max    int64
	codecs *serialize.Codecs

	// mu guards index and the totals derived from it.
	mu      sync.Mutex
	index   map[string]*indexEntry
	logical uint64
	stored  uint64

	clock                                             atomic.Uint64
	hits, misses, corrupt, evictions, puts, putErrors atomic.Uint64
	closed                                            atomic.Bool
}

// Open opens or creates the store in opts.Dir.
func Open(opts *Options) (*Store, error) {
	if err := opts.validate(); err != nil {
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
	bo := badger.DefaultOptions(opts.Dir).
		WithLogger(badgerLogger{logger.With("component", "l2", "dir", opts.Dir)}).
		WithCompression(options.None). // serialize compresses, per chunk
		WithBlockCacheSize(16 << 20).
		WithValueThreshold(valueThreshold).
		WithSyncWrites(opts.SyncWrites).
		WithMetricsEnabled(false)
	db, err := badger.Open(bo)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, fmt.Errorf("l2: open %s: %w", opts.Dir, err)
	}
	codecs, err := serialize.New(&serialize.Options{ChunkSize: opts.ChunkSize})
	if err != nil {
		db.Close()
		lock.Close()
		return nil, err
	}
	s := &Store{db: db, lock: lock, dir: opts.Dir, max: opts.MaxBytes, codecs: codecs, index: make(map[string]*indexEntry)}
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
	return &meta{id: bytes.Clone(v[:idLen]), written: int64(binary.LittleEndian.Uint64(v[idLen:])), header: h}, nil
}

// load builds the in-memory index from the meta records, drops entries whose
// meta record is corrupt, and sweeps chunks that no meta record names (left
// by a crash between writing chunks and committing).
func (s *Store) load() error {
	type rec struct {
		key     string
		written int64
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
				s.index[key] = &indexEntry{logical: m.header.Length, stored: m.header.StoredBytes()}
				s.logical += m.header.Length
				s.stored += m.header.StoredBytes()
				recs = append(recs, rec{key, m.written})
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
		return nil
	})
	if err != nil {
		return fmt.Errorf("l2: %s: reading index: %w", s.dir, err)
	}
	// Older writes are less recently used.
	slices.SortFunc(recs, func(a, b rec) int { return int(min(max(a.written-b.written, -1), 1)) })
	for _, r := range recs {
		s.index[r.key].lastUse = s.clock.Add(1)
	}
	var orphans [][]byte
	err = s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{chunkPrefix}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) != 1+idLen+4 || !live[string(k[1:1+idLen])] {
				orphans = append(orphans, it.Item().KeyCopy(nil))
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("l2: %s: sweeping: %w", s.dir, err)
	}
	s.corrupt.Add(uint64(len(badMeta)))
	return s.deleteKeys(append(badMeta, orphans...))
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

func newID() []byte {
	id := make([]byte, idLen)
	_, _ = rand.Read(id) // crypto/rand.Read never fails on supported platforms
	return id
}

// Put encodes and stores data under key, replacing any older entry. When it
// returns nil the entry is complete and readable; a failed or interrupted Put
// leaves the older entry, if any, intact.
func (s *Store) Put(key, dtype string, shape []uint64, data []byte) error {
	if s.closed.Load() {
		return fmt.Errorf("l2: %s: %w", s.dir, errs.ErrClosed)
	}
	err := s.put(key, dtype, shape, data)
	if err != nil {
		s.putErrors.Add(1)
		return fmt.Errorf("l2: %s: put %q: %w", s.dir, key, err)
	}
	s.puts.Add(1)
	return s.enforceBudget(key)
}

func (s *Store) put(key, dtype string, shape []uint64, data []byte) error {
	e, err := s.codecs.Encode(dtype, shape, data)
	if err != nil {
		return err
	}
	id := newID()
	mv := make([]byte, metaFixed, metaFixed+128+len(e.Header.Chunks)*9)
	copy(mv, id)
	binary.LittleEndian.PutUint64(mv[idLen:], uint64(time.Now().UnixNano()))
	if mv, err = e.Header.AppendBinary(mv); err != nil {
		return err
	}
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
	// Commit point: the meta record, swapped in with the old chunks' removal.
	mk := metaKey(key)
	var old *meta
	for range commitRetries {
		old = nil
		err = s.db.Update(func(txn *badger.Txn) error {
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
		if !errors.Is(err, badger.ErrConflict) {
			break
		}
	}
	if err != nil {
		_ = s.deleteChunks(id, len(e.Chunks))
		return err
	}
	s.mu.Lock()
	if ie, ok := s.index[key]; ok {
		s.logical -= ie.logical
		s.stored -= ie.stored
	}
	ie := &indexEntry{logical: e.Header.Length, stored: e.Header.StoredBytes(), lastUse: s.clock.Add(1)}
	s.index[key] = ie
	s.logical += ie.logical
	s.stored += ie.stored
	s.mu.Unlock()
	return nil
}

func (s *Store) deleteChunks(id []byte, n int) error {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = chunkKey(id, i)
	}
	return s.deleteKeys(keys)
}

// enforceBudget evicts least recently used entries, never keep, until the
// stored bytes fit the budget.
func (s *Store) enforceBudget(keep string) error {
	if s.max == 0 {
		return nil
	}
	s.mu.Lock()
	if s.stored <= uint64(s.max) {
		s.mu.Unlock()
		return nil
	}
	type cand struct {
		key string
		ie  *indexEntry
	}
	cands := make([]cand, 0, len(s.index))
	for k, ie := range s.index {
		if k != keep {
			cands = append(cands, cand{k, ie})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int { return int(min(max(int64(a.ie.lastUse)-int64(b.ie.lastUse), -1), 1)) })
	var victims []string
	over := s.stored - uint64(s.max)
	for _, c := range cands {
		if over == 0 {
			break
		}
		victims = append(victims, c.key)
		over -= min(over, c.ie.stored)
	}
	s.mu.Unlock()
	for _, k := range victims {
		if err := s.Delete(k); err != nil {
			return err
		}
		s.evictions.Add(1)
	}
	return nil
}

// Get reads and decodes the entry under key. A missing entry is
// errs.ErrNotFound; a damaged one is errs.ErrCorrupt, and is dropped.
func (s *Store) Get(key string) (*Value, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("l2: %s: %w", s.dir, errs.ErrClosed)
	}
	v, err := s.get(key)
	switch {
	case err == nil:
		s.hits.Add(1)
		s.touch(key)
		return v, nil
	case errors.Is(err, errs.ErrNotFound):
		s.misses.Add(1)
	case errors.Is(err, errs.ErrCorrupt) || errors.Is(err, errs.ErrVersion):
		s.corrupt.Add(1)
		if derr := s.Delete(key); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	return nil, fmt.Errorf("l2: %s: get %q: %w", s.dir, key, err)
}

func (s *Store) touch(key string) {
	s.mu.Lock()
	if ie, ok := s.index[key]; ok {
		ie.lastUse = s.clock.Add(1)
	}
	s.mu.Unlock()
}

func (s *Store) readMeta(key string) (*meta, error) {
	var m *meta
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return errs.ErrNotFound
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			m, err = parseMeta(v)
			return err
		})
	})
	return m, err
}

func (s *Store) get(key string) (*Value, error) {
	m, err := s.readMeta(key)
	if err != nil {
		return nil, err
	}
	h := m.header
	out := make([]byte, h.Length)
	var g errgroup.Group
	g.SetLimit(max(1, min(len(h.Chunks), 8)))
	var missing atomic.Bool
	for i := range h.Chunks {
		g.Go(func() error {
			start := i * int(h.ChunkSize)
			dst := out[start : start+h.ChunkLen(i)]
			// Chunk keys are immutable, so each may be read in its own
			// snapshot; a chunk gone missing means a concurrent replace or
			// delete, told apart from damage below.
			return s.db.View(func(txn *badger.Txn) error {
				item, err := txn.Get(chunkKey(m.id, i))
				if errors.Is(err, badger.ErrKeyNotFound) {
					missing.Store(true)
					return fmt.Errorf("%w: chunk %d missing", errs.ErrCorrupt, i)
				}
				if err != nil {
					return err
				}
				return item.Value(func(v []byte) error { return s.codecs.DecodeChunk(h, i, dst, v) })
			})
		})
	}
	if err := g.Wait(); err != nil {
		if missing.Load() {
			if cur, merr := s.readMeta(key); merr != nil || !bytes.Equal(cur.id, m.id) {
				return nil, errs.ErrNotFound
			}
		}
		return nil, err
	}
	return &Value{DType: h.DType, Shape: h.Shape, Data: out}, nil
}

// Stat describes the entry under key without reading its chunks.
func (s *Store) Stat(key string) (*EntryInfo, error) {
	m, err := s.readMeta(key)
	if err != nil {
		return nil, fmt.Errorf("l2: %s: stat %q: %w", s.dir, key, err)
	}
	return infoOf(key, m), nil
}

func infoOf(key string, m *meta) *EntryInfo {
	return &EntryInfo{
		Key: key, DType: m.header.DType, Shape: m.header.Shape,
		LogicalBytes: m.header.Length, StoredBytes: m.header.StoredBytes(),
		Written: time.Unix(0, m.written),
	}
}

// Delete removes the entry under key; a missing key is not an error.
func (s *Store) Delete(key string) error {
	mk := metaKey(key)
	var err error
	for range commitRetries {
		err = s.db.Update(func(txn *badger.Txn) error {
			item, err := txn.Get(mk)
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			var m *meta
			_ = item.Value(func(v []byte) error { m, _ = parseMeta(v); return nil })
			if m != nil {
				for i := range m.header.Chunks {
					if err := txn.Delete(chunkKey(m.id, i)); err != nil {
						return err
					}
				}
			}
			// Chunks of an unreadable record are swept at the next Open.
			return txn.Delete(mk)
		})
		if !errors.Is(err, badger.ErrConflict) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("l2: %s: delete %q: %w", s.dir, key, err)
	}
	s.mu.Lock()
	if ie, ok := s.index[key]; ok {
		s.logical -= ie.logical
		s.stored -= ie.stored
		delete(s.index, key)
	}
	s.mu.Unlock()
	return nil
}

// Stats returns the store's contents and counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{Entries: len(s.index), LogicalBytes: s.logical, StoredBytes: s.stored, MaxBytes: s.max}
	s.mu.Unlock()
	st.Hits, st.Misses, st.Corrupt = s.hits.Load(), s.misses.Load(), s.corrupt.Load()
	st.Evictions, st.Puts, st.PutErrors = s.evictions.Load(), s.puts.Load(), s.putErrors.Load()
	return st
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// Close syncs and closes the store and releases the directory lock.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	err := s.db.Close()
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
