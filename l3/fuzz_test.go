package l3

import (
	"bytes"
	"testing"
	"time"

	"github.com/modelcache/modelcache/serialize"
)

// A meta comes from Redis, where any client may write: decoding one never
// panics, what decodes encodes back to the same bytes, and what a reader's
// expectation admits is within it.
func FuzzDecodeMeta(f *testing.F) {
	h := &serialize.Header{DType: "BF16", Shape: []uint64{2, 3}, Length: 12, ChunkSize: 1 << 20,
		Chunks: []serialize.ChunkInfo{{Codec: serialize.Raw, StoredLen: 12, Sum: 7}}}
	add := func(m *meta) {
		b, err := m.encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	add(&meta{id: make([]byte, idLen), written: 1, expires: 2, key: "/m/a\x00v\x00t", header: h})
	// What the checks refuse: a chunk size past MaxChunk, a shape that
	// does not say the length, another shape than expected, an entry far
	// longer than expected.
	big := *h
	big.ChunkSize = serialize.MaxChunkSize
	add(&meta{id: make([]byte, idLen), key: "k", header: &big})
	odd := *h
	odd.Shape = []uint64{2, 2}
	add(&meta{id: make([]byte, idLen), key: "k", header: &odd})
	other := *h
	other.Shape = []uint64{3, 2}
	add(&meta{id: make([]byte, idLen), key: "k", header: &other})
	long := &serialize.Header{DType: "U8", Shape: []uint64{64 << 20}, Length: 64 << 20, ChunkSize: MaxChunk}
	for i := range serialize.NumChunks(long.Length, long.ChunkSize) {
		long.Chunks = append(long.Chunks, serialize.ChunkInfo{Codec: serialize.Zstd, StoredLen: 9, Sum: uint32(i)})
	}
	add(&meta{id: make([]byte, idLen), key: "k", header: long})
	f.Add([]byte("MCL3"))
	f.Add([]byte{})
	wants := []*Expect{nil, {MaxLength: 1 << 20}, {Exact: true, DType: "BF16", Shape: []uint64{2, 3}, Length: 12}}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		again, err := m.encode()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		if string(again) != string(b) {
			t.Fatalf("decode then encode changed the bytes")
		}
		if m.header.ChunkSize > MaxChunk {
			t.Fatalf("chunk size %d admitted", m.header.ChunkSize)
		}
		for _, w := range wants {
			if m.check(w) != nil {
				continue
			}
			if m.header.Length > w.maxLength() {
				t.Fatalf("length %d admitted by %+v", m.header.Length, w)
			}
			if w != nil && w.Exact && (m.header.DType != w.DType || len(m.header.Shape) != len(w.Shape)) {
				t.Fatalf("%q %v admitted by %+v", m.header.DType, m.header.Shape, w)
			}
		}
	})
}

// Epochs and leases come from Redis too: with or without a fleet key,
// reading one never panics, and with a key nothing but a sealed record is
// admitted.
func FuzzDecodeRecords(f *testing.F) {
	plain := &Store{period: leaseTTL, now: time.Now}
	sealed, err := Open(&Options{Addrs: []string{"127.0.0.1:1"}, FleetKey: bytes.Repeat([]byte{1}, 16)})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sealed.Close() })
	f.Add([]byte("12"), int64(5000))
	f.Add([]byte("notanumber"), int64(-1))
	f.Add([]byte("18446744073709551616"), int64(1))
	f.Add(sealed.encodeEpoch("mc:e:ns", 7), int64(0))
	f.Add([]byte(sealed.leaseValue("mc:l:x", make([]byte, leaseTokenLen))), int64(9000))
	f.Add([]byte(plain.leaseValue("mc:l:x", make([]byte, leaseTokenLen))), int64(20000))
	f.Fuzz(func(t *testing.T, b []byte, pttlMS int64) {
		pttl := time.Duration(pttlMS) * time.Millisecond
		for _, s := range []*Store{plain, sealed} {
			_, _ = s.decodeEpoch("mc:e:ns", b)
			if s.checkLease("mc:l:x", b, pttl) == nil && (pttl < 0 || pttl > s.period) {
				t.Fatalf("a lease with a TTL of %v admitted", pttl)
			}
		}
		if _, err := sealed.decodeEpoch("mc:e:ns", b); err == nil && len(b) < 28 {
			t.Fatalf("an unsealed epoch admitted with a fleet key")
		}
	})
}
