package serialize

import (
	"bytes"
	"fmt"
	"runtime"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
)

// Codec identifies how a chunk's bytes were encoded.
type Codec uint8

// Codec ids are stable: they are written into entries.
const (
	Raw       Codec = 0 // stored as is
	Zstd      Codec = 1 // zstd frame (klauspost/compress)
	ByteGroup Codec = 2 // float-aware: bytes grouped by position in the element, each group entropy-coded
)

func (c Codec) String() string {
	switch c {
	case Raw:
		return "raw"
	case Zstd:
		return "zstd"
	case ByteGroup:
		return "bytegroup"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// A chunk is stored compressed only when that saves at least 1/minSavingDiv
// of it; below that the decode cost is not worth the bytes.
const minSavingDiv = 32

// Options configures an Encoder. The zero value is valid.
type Options struct {
	// ChunkSize is the logical size of every chunk but the last.
	// Default DefaultChunk (4 MiB).
	ChunkSize int
	// Concurrency bounds how many chunks of one value are encoded or
	// decoded at once. Default GOMAXPROCS.
	Concurrency int
}

func (o *Options) chunkSize() int {
	if o == nil || o.ChunkSize == 0 {
		return DefaultChunk
	}
	return o.ChunkSize
}

func (o *Options) concurrency() int {
	if o == nil || o.Concurrency <= 0 {
		return runtime.GOMAXPROCS(0)
	}
	return o.Concurrency
}

func (o *Options) validate() error {
	if cs := o.chunkSize(); cs < MinChunkSize || cs > MaxChunkSize {
		return fmt.Errorf("serialize: chunk size %d outside [%d, %d]", cs, MinChunkSize, MaxChunkSize)
	}
	return nil
}

// Codecs encodes and decodes entries. It is safe for concurrent use; one
// per process is enough, as it keeps its compressor state between calls.
type Codecs struct {
	chunkSize   int
	concurrency int
	zenc        *zstd.Encoder
	zfast       *zstd.Encoder // for the byte-grouped streams, already entropy-poor
	zdec        *zstd.Decoder
}

// New returns Codecs configured by opts (nil means defaults).
func New(opts *Options) (*Codecs, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Codecs{chunkSize: opts.chunkSize(), concurrency: opts.concurrency()}
	var err error
	c.zenc, err = zstd.NewWriter(nil,
		// At SpeedDefault the encoder declines to entropy-code the literals of
		// float weights (it saves nothing on BF16); SpeedBetterCompression
		// saves ~21% there and still encodes at ~400 MB/s per core.
		zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
		zstd.WithEncoderConcurrency(c.concurrency),
		zstd.WithEncoderCRC(false), // chunks carry their own CRC-32C
		zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("serialize: zstd encoder: %w", err)
	}
	c.zfast, err = zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(c.concurrency),
		zstd.WithEncoderCRC(false),
		zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("serialize: zstd encoder: %w", err)
	}
	c.zdec, err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(c.concurrency),
		zstd.WithDecoderMaxMemory(MaxChunkSize),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, fmt.Errorf("serialize: zstd decoder: %w", err)
	}
	return c, nil
}

// Close releases the compressor state.
func (c *Codecs) Close() {
	_ = c.zenc.Close()
	_ = c.zfast.Close()
	c.zdec.Close()
}

// entry is a header with its encoded chunks.
type entry struct {
	Header Header
	Chunks [][]byte
}

// Encode splits data into chunks and encodes each with the codec that pays
// best. data is not retained; the returned chunks are new allocations.
func (c *Codecs) Encode(dtype string, shape []uint64, data []byte) (*entry, error) {
	h := Header{
		DType:     dtype,
		Shape:     append([]uint64(nil), shape...),
		Length:    uint64(len(data)),
		ChunkSize: uint32(c.chunkSize),
	}
	n := NumChunks(h.Length, h.ChunkSize)
	h.Chunks = make([]ChunkInfo, n)
	e := &entry{Chunks: make([][]byte, n)}
	c.forChunks(n, func(i int) error {
		start := i * c.chunkSize
		h.Chunks[i], e.Chunks[i] = c.encodeChunk(dtype, data[start:start+h.ChunkLen(i)])
		return nil
	})
	e.Header = h
	if err := h.validate(); err != nil {
		return nil, fmt.Errorf("serialize: %w", err)
	}
	return e, nil
}

// ChunkSize is the logical size of every chunk but the last.
func (c *Codecs) ChunkSize() int { return c.chunkSize }

// EncodeChunk encodes one chunk of a value of dtype, for writers that stream
// a value chunk by chunk instead of holding it whole: src is the chunk's
// logical bytes (ChunkSize of them, fewer for the last). The result is a new
// allocation.
func (c *Codecs) EncodeChunk(dtype string, src []byte) (ChunkInfo, []byte) {
	return c.encodeChunk(dtype, src)
}

// encodeChunk stores src with the codec that pays: float-aware for float
// dtypes, zstd for other data, raw when neither saves 1/minSavingDiv.
func (c *Codecs) encodeChunk(dtype string, src []byte) (ChunkInfo, []byte) {
	info := ChunkInfo{Sum: checksum(src)}
	if w := groupWidth(dtype); w > 0 && len(src)%w == 0 {
		if p := c.encodeGroup(src, w); p != nil {
			info.Codec, info.StoredLen = ByteGroup, uint32(len(p))
			return info, p
		}
	} else if len(src) > 0 {
		limit := len(src) - len(src)/minSavingDiv
		g := groupPool.Get().(*groupBufs)
		z := c.zenc.EncodeAll(src, grow(g.out, limit)[:0])
		g.out = z[:0]
		if len(z) <= limit {
			z = bytes.Clone(z)
			groupPool.Put(g)
			info.Codec, info.StoredLen = Zstd, uint32(len(z))
			return info, z
		}
		groupPool.Put(g)
	}
	info.Codec, info.StoredLen = Raw, uint32(len(src))
	return info, bytes.Clone(src)
}

// DecodeChunk decodes chunk i of h from src into dst, which must have length
// h.ChunkLen(i), and verifies its checksum.
func (c *Codecs) DecodeChunk(h *Header, i int, dst, src []byte) error {
	if i < 0 || i >= len(h.Chunks) || len(dst) != h.ChunkLen(i) {
		return fmt.Errorf("serialize: chunk %d: bad destination", i)
	}
	info := h.Chunks[i]
	if len(src) != int(info.StoredLen) {
		return fmt.Errorf("serialize: chunk %d: %w: %d stored bytes, header says %d", i, errs.ErrCorrupt, len(src), info.StoredLen)
	}
	switch info.Codec {
	case Raw:
		copy(dst, src)
	case Zstd:
		// The three-index slice stops zstd from writing past this chunk into
		// its neighbour, which another goroutine may be decoding.
		out, err := c.zdec.DecodeAll(src, dst[:0:len(dst)])
		if err != nil {
			return fmt.Errorf("serialize: chunk %d: %w: zstd: %w", i, errs.ErrCorrupt, err)
		}
		if len(out) != len(dst) || (len(out) > 0 && &out[0] != &dst[0]) {
			return fmt.Errorf("serialize: chunk %d: %w: decoded %d bytes, want %d", i, errs.ErrCorrupt, len(out), len(dst))
		}
	case ByteGroup:
		if err := c.decodeGroup(dst, src); err != nil {
			return fmt.Errorf("serialize: chunk %d: %w", i, err)
		}
	default:
		return fmt.Errorf("serialize: chunk %d: %w codec %d", i, errs.ErrUnsupported, info.Codec)
	}
	if got := checksum(dst); got != info.Sum {
		return fmt.Errorf("serialize: chunk %d: %w: checksum %08x, stored %08x", i, errs.ErrCorrupt, got, info.Sum)
	}
	return nil
}

// Decode decodes all chunks of e in parallel into one new buffer of
// e.Header.Length bytes. Callers that got the header from outside must check
// Length against their own limit first: Decode allocates it.
func (c *Codecs) Decode(e *entry) ([]byte, error) {
	out := make([]byte, e.Header.Length)
	if err := c.DecodeInto(out, e); err != nil {
		return nil, err
	}
	return out, nil
}

// DecodeInto decodes e into dst, which must be e.Header.Length bytes long:
// for callers that reuse buffers (a fresh large allocation costs page faults
// comparable to the decoding itself).
func (c *Codecs) DecodeInto(dst []byte, e *entry) error {
	h := &e.Header
	if len(e.Chunks) != len(h.Chunks) {
		return fmt.Errorf("serialize: %w: %d chunks, header says %d", errs.ErrCorrupt, len(e.Chunks), len(h.Chunks))
	}
	if uint64(len(dst)) != h.Length {
		return fmt.Errorf("serialize: destination of %d bytes for an entry of %d", len(dst), h.Length)
	}
	return c.forChunks(len(h.Chunks), func(i int) error {
		start := i * int(h.ChunkSize)
		return c.DecodeChunk(h, i, dst[start:start+h.ChunkLen(i)], e.Chunks[i])
	})
}

// forChunks runs fn for chunks 0..n-1, up to c.concurrency at once, and
// returns the first error. One chunk runs on the calling goroutine: most
// tensors are a single chunk, and a goroutine per call would cost more than
// encoding a small one.
func (c *Codecs) forChunks(n int, fn func(i int) error) error {
	if n == 1 || c.concurrency == 1 {
		for i := range n {
			if err := fn(i); err != nil {
				return err
			}
		}
		return nil
	}
	var g errgroup.Group
	g.SetLimit(c.concurrency)
	for i := range n {
		g.Go(func() error { return fn(i) })
	}
	return g.Wait()
}

// AppendBinary appends the entry as one blob: header, then the chunks.
func (e *entry) AppendBinary(b []byte) ([]byte, error) {
	b, err := e.Header.AppendBinary(b)
	if err != nil {
		return b, err
	}
	for _, c := range e.Chunks {
		b = append(b, c...)
	}
	return b, nil
}

// unmarshal parses a blob written by entry.AppendBinary. The chunks alias b.
// It checks structure and the header checksum; chunk checksums are checked by
// Decode.
func unmarshal(b []byte) (*entry, error) {
	h, n, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	rest := b[n:]
	if uint64(len(rest)) != h.StoredBytes() {
		return nil, fmt.Errorf("serialize: %w: %d chunk bytes, header says %d", errs.ErrCorrupt, len(rest), h.StoredBytes())
	}
	e := &entry{Header: *h, Chunks: make([][]byte, len(h.Chunks))}
	for i, c := range h.Chunks {
		e.Chunks[i], rest = rest[:c.StoredLen:c.StoredLen], rest[c.StoredLen:]
	}
	return e, nil
}
