package serialize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/huff0"

	"github.com/modelcache/modelcache/errs"
)

// The float-aware codec (ByteGroup) regroups the bytes of a chunk by their
// position within the element: for BF16 all high bytes (sign and exponent,
// little entropy) form one stream and all low bytes (mantissa, near noise)
// another. Each stream is then stored raw, Huffman-coded (huff0) in blocks,
// or zstd-compressed, whichever is smallest.
//
// Payload layout:
//
//	width u8 | width × (mode u8 | length u32) | the streams' payloads in order
//
// A huff0 stream payload is a sequence of blocks of up to groupBlock input
// bytes, each: kind u8 (0 raw, 1 huff0 4X, 2 run of one byte) | length u32 |
// data.

const (
	streamRaw  = 0
	streamHuff = 1
	streamZstd = 2

	blockRaw  = 0
	blockHuff = 1
	blockRLE  = 2

	// groupBlock is the input size of one huff0 block: under huff0's limit,
	// large enough that the table (at most ~130 bytes) costs < 0.1%.
	groupBlock = 128 << 10

	// zstdSample is how much of a stream zstd is tried on before the whole.
	zstdSample = 32 << 10
)

// groupWidth is the element width the ByteGroup codec splits by, or 0 when
// the dtype is not a multi-byte float.
func groupWidth(dtype string) int {
	switch dtype {
	case "BF16", "F16":
		return 2
	case "F32":
		return 4
	case "F64":
		return 8
	}
	return 0
}

// groupBufs holds the per-call scratch of the ByteGroup codec.
type groupBufs struct {
	streams []byte // the regrouped chunk
	tmp     []byte // one huff0-encoded or decoded stream
	ztmp    []byte // one zstd-encoded stream
	out     []byte // the encoded chunk, before it is copied out at its size
	huff    huff0.Scratch
}

var groupPool = sync.Pool{New: func() any { return &groupBufs{} }}

func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// shuffle writes the bytes of src grouped by position: dst[k*n+i] = src[i*w+k].
func shuffle(dst, src []byte, w int) {
	n := len(src) / w
	switch w {
	case 2:
		s0, s1 := dst[:n], dst[n:2*n]
		for i := range n {
			s0[i], s1[i] = src[2*i], src[2*i+1]
		}
	case 4:
		s0, s1, s2, s3 := dst[:n], dst[n:2*n], dst[2*n:3*n], dst[3*n:4*n]
		for i := range n {
			e := src[4*i : 4*i+4]
			s0[i], s1[i], s2[i], s3[i] = e[0], e[1], e[2], e[3]
		}
	default:
		for k := range w {
			s := dst[k*n : (k+1)*n]
			for i := range n {
				s[i] = src[i*w+k]
			}
		}
	}
}

// spread moves the low 4 bytes of x to the even bytes of the result.
func spread(x uint64) uint64 {
	x &= 0xffffffff
	x = (x | x<<16) & 0x0000ffff0000ffff
	return (x | x<<8) & 0x00ff00ff00ff00ff
}

// spread16 moves the low two 16-bit halves of x to the even 16-bit lanes.
func spread16(x uint64) uint64 {
	x &= 0xffffffff
	return (x | x<<16) & 0x0000ffff0000ffff
}

// unshuffle interleaves the streams back into elements of width w:
// dst[i*w+k] = streams[k][i]. Width 2 and 4, the common float widths, are
// merged 8 and 4 elements at a time.
func unshuffle(dst []byte, streams [][]byte, w int) {
	n := len(dst) / w
	switch w {
	case 2:
		s0, s1, d := streams[0][:n], streams[1][:n], dst[:2*n]
		m := interleave2Wide(d, s0, s1)
		s0, s1, d = s0[m:], s1[m:], d[2*m:]
		// Reslicing as we go lets the compiler drop the bounds checks.
		for len(s0) >= 8 && len(s1) >= 8 && len(d) >= 16 {
			a := binary.LittleEndian.Uint64(s0)
			b := binary.LittleEndian.Uint64(s1)
			binary.LittleEndian.PutUint64(d, spread(a)|spread(b)<<8)
			binary.LittleEndian.PutUint64(d[8:], spread(a>>32)|spread(b>>32)<<8)
			s0, s1, d = s0[8:], s1[8:], d[16:]
		}
		for i := range s0 {
			d[2*i], d[2*i+1] = s0[i], s1[i]
		}
	case 4:
		s0, s1, s2, s3, d := streams[0][:n], streams[1][:n], streams[2][:n], streams[3][:n], dst[:4*n]
		m := interleave4Wide(d, s0, s1, s2, s3)
		s0, s1, s2, s3, d = s0[m:], s1[m:], s2[m:], s3[m:], d[4*m:]
		for len(s0) >= 4 && len(s1) >= 4 && len(s2) >= 4 && len(s3) >= 4 && len(d) >= 16 {
			// Two 2-way merges: bytes 0,1 into 16-bit pairs, 2,3 likewise,
			// then the pairs into 32-bit elements.
			lo := spread(uint64(binary.LittleEndian.Uint32(s0))) | spread(uint64(binary.LittleEndian.Uint32(s1)))<<8
			hi := spread(uint64(binary.LittleEndian.Uint32(s2))) | spread(uint64(binary.LittleEndian.Uint32(s3)))<<8
			binary.LittleEndian.PutUint64(d, spread16(lo)|spread16(hi)<<16)
			binary.LittleEndian.PutUint64(d[8:], spread16(lo>>32)|spread16(hi>>32)<<16)
			s0, s1, s2, s3, d = s0[4:], s1[4:], s2[4:], s3[4:], d[16:]
		}
		for i := range s0 {
			d[4*i], d[4*i+1], d[4*i+2], d[4*i+3] = s0[i], s1[i], s2[i], s3[i]
		}
	default:
		for k, s := range streams {
			for i, b := range s[:n] {
				dst[i*w+k] = b
			}
		}
	}
}

// encodeGroup encodes src (len a multiple of w) with the ByteGroup codec
// and returns the payload, or nil when that would not save at least
// 1/minSavingDiv of src.
func (c *Codecs) encodeGroup(src []byte, w int) []byte {
	n := len(src) / w
	g := groupPool.Get().(*groupBufs)
	defer groupPool.Put(g)
	g.streams = grow(g.streams, len(src))
	shuffle(g.streams, src, w)

	limit := len(src) - len(src)/minSavingDiv
	if limit < 1+5*w {
		return nil
	}
	// Encoded into a pooled buffer and copied out at its size: a new
	// buffer of the limit per chunk would be a chunk's worth of garbage
	// each, and a third of it held unused while the chunk waits to be
	// written.
	out := grow(g.out, limit)[:1+5*w]
	out[0] = byte(w)
	for k := range w {
		mode, payload := c.encodeStream(g, g.streams[k*n:(k+1)*n])
		if len(out)+len(payload) > limit {
			g.out = out
			return nil
		}
		out[1+5*k] = mode
		binary.LittleEndian.PutUint32(out[2+5*k:], uint32(len(payload)))
		out = append(out, payload...)
	}
	g.out = out
	return bytes.Clone(out)
}

// encodeStream picks the smallest encoding of one stream. The payload may
// alias g's buffers or s: use it before g is used again.
func (c *Codecs) encodeStream(g *groupBufs, s []byte) (byte, []byte) {
	huff := encodeHuff(g, s)
	if huff == nil {
		// Not even order-0 redundancy: an LZ coder will not find enough
		// in float bytes to be worth its decode time.
		return streamRaw, s
	}
	// huff0 found redundancy; zstd may find more (runs, repeats), as in
	// pruned or zero-padded tensors. It seldom does on trained weights, so
	// a sample decides whether the whole stream is worth trying.
	if len(s) > zstdSample {
		g.ztmp = c.zfast.EncodeAll(s[:zstdSample], g.ztmp[:0])
		if len(g.ztmp)*len(s) >= len(huff)*zstdSample {
			return streamHuff, huff
		}
	}
	g.ztmp = c.zfast.EncodeAll(s, g.ztmp[:0])
	if len(g.ztmp) < len(huff)-len(huff)/64 {
		return streamZstd, g.ztmp
	}
	return streamHuff, huff
}

// encodeHuff Huffman-codes s in blocks of groupBlock bytes into g.tmp and
// returns that, or nil when it saves under 1/minSavingDiv of s.
func encodeHuff(g *groupBufs, s []byte) []byte {
	limit := len(s) - len(s)/minSavingDiv
	out := g.tmp[:0]
	g.huff.Reuse = huff0.ReusePolicyNone
	for rest := s; len(rest) > 0; {
		blk := rest[:min(len(rest), groupBlock)]
		rest = rest[len(blk):]
		enc, _, err := huff0.Compress4X(blk, &g.huff)
		switch {
		case err == nil && len(enc) < len(blk):
			out = append(out, blockHuff)
			out = binary.LittleEndian.AppendUint32(out, uint32(len(enc)))
			out = append(out, enc...)
		case errors.Is(err, huff0.ErrUseRLE):
			out = append(out, blockRLE)
			out = binary.LittleEndian.AppendUint32(out, uint32(len(blk)))
			out = append(out, blk[0])
		default:
			out = append(out, blockRaw)
			out = binary.LittleEndian.AppendUint32(out, uint32(len(blk)))
			out = append(out, blk...)
		}
		if len(out) > limit {
			g.tmp = out
			return nil
		}
	}
	g.tmp = out
	return out
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: bytegroup: %s", errs.ErrCorrupt, fmt.Sprintf(format, args...))
}

// decodeGroup decodes a ByteGroup payload into dst, whose length is the
// chunk's logical length. It trusts nothing in src.
func (c *Codecs) decodeGroup(dst, src []byte) error {
	if len(src) < 1 {
		return corruptf("empty payload")
	}
	w := int(src[0])
	if w != 2 && w != 4 && w != 8 {
		return corruptf("element width %d", w)
	}
	if len(dst)%w != 0 {
		return corruptf("%d bytes is not a whole number of %d-byte elements", len(dst), w)
	}
	n := len(dst) / w
	off := 1 + 5*w
	if len(src) < off {
		return corruptf("truncated stream table")
	}
	g := groupPool.Get().(*groupBufs)
	defer groupPool.Put(g)
	g.streams = grow(g.streams, len(dst))
	var streams [8][]byte
	for k := range w {
		mode := src[1+5*k]
		l := int(binary.LittleEndian.Uint32(src[2+5*k:]))
		if l < 0 || l > len(src)-off {
			return corruptf("stream %d: %d bytes, %d left", k, l, len(src)-off)
		}
		p := src[off : off+l]
		off += l
		switch mode {
		case streamRaw:
			if l != n {
				return corruptf("stream %d: raw stream of %d bytes, want %d", k, l, n)
			}
			streams[k] = p
		case streamHuff:
			streams[k] = g.streams[k*n : (k+1)*n]
			if err := decodeHuff(g, streams[k], p); err != nil {
				return corruptf("stream %d: %v", k, err)
			}
		case streamZstd:
			streams[k] = g.streams[k*n : (k+1)*n]
			out, err := c.zdec.DecodeAll(p, streams[k][:0:n])
			if err != nil || len(out) != n {
				return corruptf("stream %d: zstd: %d bytes, want %d (%v)", k, len(out), n, err)
			}
		default:
			return corruptf("stream %d: unknown mode %d", k, mode)
		}
	}
	if off != len(src) {
		return corruptf("%d stray bytes after the streams", len(src)-off)
	}
	unshuffle(dst, streams[:w], w)
	return nil
}

// decodeHuff decodes the blocks in p into dst, which must be filled exactly.
func decodeHuff(g *groupBufs, dst, p []byte) error {
	pos := 0
	for len(p) > 0 {
		if len(p) < 5 {
			return errors.New("truncated block header")
		}
		kind, l := p[0], int(binary.LittleEndian.Uint32(p[1:5]))
		p = p[5:]
		want := min(len(dst)-pos, groupBlock)
		if want == 0 {
			return errors.New("more blocks than data")
		}
		blk := dst[pos : pos+want]
		switch kind {
		case blockRaw:
			if l != want || len(p) < l {
				return fmt.Errorf("raw block of %d bytes, want %d", l, want)
			}
			copy(blk, p[:l])
			p = p[l:]
		case blockRLE:
			if l != want || len(p) < 1 {
				return fmt.Errorf("run of %d bytes, want %d", l, want)
			}
			for i := range blk {
				blk[i] = p[0]
			}
			p = p[1:]
		case blockHuff:
			if l < 0 || l > len(p) {
				return fmt.Errorf("huff0 block of %d bytes, %d left", l, len(p))
			}
			s, rem, err := huff0.ReadTable(p[:l], &g.huff)
			if err != nil {
				return fmt.Errorf("huff0 table: %w", err)
			}
			out, err := s.Decoder().Decompress4X(blk[:0:want], rem)
			if err != nil || len(out) != want {
				return fmt.Errorf("huff0: %d bytes, want %d (%v)", len(out), want, err)
			}
			p = p[l:]
		default:
			return fmt.Errorf("unknown block kind %d", kind)
		}
		pos += want
	}
	if pos != len(dst) {
		return fmt.Errorf("blocks hold %d bytes, want %d", pos, len(dst))
	}
	return nil
}
