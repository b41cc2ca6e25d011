package serialize

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/modelcache/modelcache/errs"
)

// version is the entry format version this build writes and reads.
const version = 1

const magic = "MCEN"

// Limits enforced when writing and parsing headers.
const (
	MaxDTypeLen   = 16
	MaxDims       = 64
	MinChunkSize  = 1 << 10
	MaxChunkSize  = 64 << 20
	DefaultChunk  = 4 << 20
	maxLength     = 1 << 50 // 1 PiB: far beyond any tensor, far below overflow
	chunkInfoSize = 1 + 4 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksum is the CRC-32C used for chunks and headers.
func checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// ChunkInfo describes one stored chunk.
type ChunkInfo struct {
	Codec     Codec
	StoredLen uint32 // bytes after encoding
	Sum       uint32 // CRC-32C of the chunk's logical (decoded) bytes
}

// Header describes one entry.
type Header struct {
	DType     string
	Shape     []uint64
	Length    uint64 // logical bytes
	ChunkSize uint32
	Chunks    []ChunkInfo
}

// NumChunks is how many chunks a value of length bytes is split into.
func NumChunks(length uint64, chunkSize uint32) int {
	if length == 0 {
		return 0
	}
	return int((length + uint64(chunkSize) - 1) / uint64(chunkSize))
}

// ChunkLen is the logical length of chunk i.
func (h *Header) ChunkLen(i int) int {
	start := uint64(i) * uint64(h.ChunkSize)
	return int(min(uint64(h.ChunkSize), h.Length-start))
}

// StoredBytes is the sum of the chunks' stored lengths.
func (h *Header) StoredBytes() uint64 {
	var n uint64
	for _, c := range h.Chunks {
		n += uint64(c.StoredLen)
	}
	return n
}

// CheckLength refuses a length no entry may have, before anything is
// allocated for its chunks.
func (h *Header) CheckLength() error {
	if h.Length > maxLength {
		return fmt.Errorf("serialize: length %d over the %d limit", h.Length, uint64(maxLength))
	}
	return nil
}

func (h *Header) validate() error {
	if len(h.DType) > MaxDTypeLen {
		return fmt.Errorf("dtype %.32q longer than %d bytes", h.DType, MaxDTypeLen)
	}
	if len(h.Shape) > MaxDims {
		return fmt.Errorf("%d dims, at most %d", len(h.Shape), MaxDims)
	}
	if h.ChunkSize < MinChunkSize || h.ChunkSize > MaxChunkSize {
		return fmt.Errorf("chunk size %d outside [%d, %d]", h.ChunkSize, MinChunkSize, MaxChunkSize)
	}
	if h.Length > maxLength {
		return fmt.Errorf("length %d over the %d limit", h.Length, uint64(maxLength))
	}
	if n := NumChunks(h.Length, h.ChunkSize); n != len(h.Chunks) {
		return fmt.Errorf("%d chunks for length %d and chunk size %d, want %d", len(h.Chunks), h.Length, h.ChunkSize, n)
	}
	for i, c := range h.Chunks {
		if c.StoredLen > h.ChunkSize {
			return fmt.Errorf("chunk %d: stored length %d over chunk size %d", i, c.StoredLen, h.ChunkSize)
		}
		if c.Codec == Raw && int(c.StoredLen) != h.ChunkLen(i) {
			return fmt.Errorf("chunk %d: raw chunk of %d bytes, want %d", i, c.StoredLen, h.ChunkLen(i))
		}
	}
	return nil
}

// AppendBinary appends the encoded header to b.
func (h *Header) AppendBinary(b []byte) ([]byte, error) {
	if err := h.validate(); err != nil {
		return b, fmt.Errorf("serialize: invalid header: %w", err)
	}
	start := len(b)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint16(b, version)
	b = append(b, byte(len(h.DType)))
	b = append(b, h.DType...)
	b = append(b, byte(len(h.Shape)))
	for _, d := range h.Shape {
		b = binary.LittleEndian.AppendUint64(b, d)
	}
	b = binary.LittleEndian.AppendUint64(b, h.Length)
	b = binary.LittleEndian.AppendUint32(b, h.ChunkSize)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(h.Chunks)))
	for _, c := range h.Chunks {
		b = append(b, byte(c.Codec))
		b = binary.LittleEndian.AppendUint32(b, c.StoredLen)
		b = binary.LittleEndian.AppendUint32(b, c.Sum)
	}
	return binary.LittleEndian.AppendUint32(b, checksum(b[start:])), nil
}

// reader is a bounds-checked cursor; the first short read sets err.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = fmt.Errorf("truncated header: need %d bytes at offset %d, have %d", n, r.off, len(r.b)-r.off)
		return nil
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *reader) u8() byte {
	if s := r.take(1); s != nil {
		return s[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if s := r.take(2); s != nil {
		return binary.LittleEndian.Uint16(s)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if s := r.take(4); s != nil {
		return binary.LittleEndian.Uint32(s)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if s := r.take(8); s != nil {
		return binary.LittleEndian.Uint64(s)
	}
	return 0
}

// ParseHeader decodes a header from the front of b and returns it with the
// number of bytes it took. Errors wrap errs.ErrCorrupt, or errs.ErrVersion
// for a header of another format version.
func ParseHeader(b []byte) (*Header, int, error) {
	h, n, err := parseHeader(b)
	if err != nil {
		return nil, 0, fmt.Errorf("serialize: %w", err)
	}
	return h, n, nil
}

func parseHeader(b []byte) (*Header, int, error) {
	r := &reader{b: b}
	if m := r.take(len(magic)); m == nil || string(m) != magic {
		return nil, 0, fmt.Errorf("%w: bad magic", errs.ErrCorrupt)
	}
	if v := r.u16(); r.err == nil && v != version {
		return nil, 0, fmt.Errorf("%w: entry version %d, this build reads %d", errs.ErrVersion, v, version)
	}
	h := &Header{}
	n := int(r.u8())
	if n > MaxDTypeLen {
		return nil, 0, fmt.Errorf("%w: dtype length %d", errs.ErrCorrupt, n)
	}
	h.DType = string(r.take(n))
	nd := int(r.u8())
	if nd > MaxDims {
		return nil, 0, fmt.Errorf("%w: %d dims", errs.ErrCorrupt, nd)
	}
	if r.err == nil && nd > 0 {
		h.Shape = make([]uint64, nd)
		for i := range h.Shape {
			h.Shape[i] = r.u64()
		}
	}
	h.Length = r.u64()
	h.ChunkSize = r.u32()
	nc := r.u32()
	if r.err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errs.ErrCorrupt, r.err)
	}
	// Bound the allocation by the input before trusting the count.
	if uint64(nc)*chunkInfoSize > uint64(len(b)-r.off) {
		return nil, 0, fmt.Errorf("%w: %d chunks do not fit in %d header bytes", errs.ErrCorrupt, nc, len(b)-r.off)
	}
	h.Chunks = make([]ChunkInfo, nc)
	for i := range h.Chunks {
		h.Chunks[i] = ChunkInfo{Codec: Codec(r.u8()), StoredLen: r.u32(), Sum: r.u32()}
	}
	end := r.off
	sum := r.u32()
	if r.err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errs.ErrCorrupt, r.err)
	}
	if got := checksum(b[:end]); got != sum {
		return nil, 0, fmt.Errorf("%w: header checksum %08x, stored %08x", errs.ErrCorrupt, got, sum)
	}
	if err := h.validate(); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", errs.ErrCorrupt, err)
	}
	return h, r.off, nil
}
