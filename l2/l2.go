package l2

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/modelcache/modelcache/internal/third_party/badger"

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

	// highWater and lowWater bound the live charged bytes as fractions of
	// MaxBytes. The gap above highWater is for garbage awaiting value-log
	// GC: with gcDiscardRatio 0.2 a value-log file holds at most 20% dead
	// bytes before it is rewritten, so live/0.8 ≤ MaxBytes × 1.07.
	highWater      = 0.85
	lowWater       = 0.80
	gcDiscardRatio = 0.2
)

// Options configures a Store.
type Options struct {
	// Dir is the directory of the store, created if missing. Required.
	Dir string
	// MaxBytes is the disk budget: what the directory may take on disk
	// (as du counts it), beyond a fixed overhead (see FixedOverhead). Live
	// entries are evicted, least recently used first, once their stored
	// bytes pass 85% of it, down to 80%, and the value log is
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
	// Written is when the entry was stored; Expires when it expires (zero:
	// never).
	Written, Expires time.Time

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
	Dir          string
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

// Stats returns the store's contents and counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	st := Stats{Dir: s.dir, Entries: s.entries, LogicalBytes: s.logical, StoredBytes: s.stored, ChargedBytes: s.charged, MaxBytes: s.max}
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
