// Reading entries.

package l2

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/modelcache/modelcache/internal/third_party/badger"
	"github.com/modelcache/modelcache/internal/third_party/badger/y"
	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
)

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
		v := &Value{DType: m.header.DType, Shape: m.header.Shape, Data: out, Written: time.Unix(0, m.written)}
		if m.expires != 0 {
			v.Expires = time.Unix(0, m.expires)
		}
		return v, nil
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
