package l3

import (
	"testing"

	"github.com/modelcache/modelcache/serialize"
)

// A meta comes from Redis, where any client may write: decoding one never
// panics, and what decodes encodes back to the same bytes.
func FuzzDecodeMeta(f *testing.F) {
	h := &serialize.Header{DType: "BF16", Shape: []uint64{2, 3}, Length: 12, ChunkSize: 1 << 20,
		Chunks: []serialize.ChunkInfo{{Codec: serialize.Raw, StoredLen: 12, Sum: 7}}}
	seed, err := (&meta{id: make([]byte, idLen), written: 1, expires: 2, key: "/m/a\x00v\x00t", header: h}).encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte("MCL3"))
	f.Add([]byte{})
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
	})
}
