// The layout of the store's records: keys, meta records, and what an entry
// is charged.

package l2

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/serialize"
)

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
