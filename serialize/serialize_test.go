package serialize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
)

func newCodecs(t testing.TB, chunk int) *Codecs {
	t.Helper()
	c, err := New(&Options{ChunkSize: chunk})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// compressible returns bytes zstd shrinks; noise returns bytes it cannot.
func compressible(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i / 97 % 7)
	}
	return b
}

func noise(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestCodecs_RoundTrip(t *testing.T) {
	c := newCodecs(t, 4096)
	cases := map[string][]byte{
		"empty":              {},
		"one byte":           {42},
		"exact chunk":        compressible(4096),
		"several chunks":     compressible(4096*3 + 17),
		"noise stays raw":    noise(10000, 1),
		"mixed":              append(compressible(8192), noise(5000, 2)...),
		"chunk boundary - 1": noise(4095, 3),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			e, err := c.Encode("BF16", []uint64{uint64(len(data))}, data)
			require.NoError(t, err)
			blob, err := e.AppendBinary(nil)
			require.NoError(t, err)
			got, err := unmarshal(blob)
			require.NoError(t, err)
			require.Equal(t, "BF16", got.Header.DType)
			require.Equal(t, []uint64{uint64(len(data))}, got.Header.Shape)
			out, err := c.Decode(got)
			require.NoError(t, err)
			require.True(t, bytes.Equal(data, out), "decoded bytes differ")
		})
	}
}

func TestCodecs_ChoosesCodecPerChunk(t *testing.T) {
	c := newCodecs(t, 4096)
	data := append(compressible(4096), noise(4096, 9)...)
	e, err := c.Encode("U8", nil, data)
	require.NoError(t, err)
	require.Len(t, e.Header.Chunks, 2)
	require.Equal(t, Zstd, e.Header.Chunks[0].Codec)
	require.Less(t, e.Header.Chunks[0].StoredLen, uint32(4096))
	require.Equal(t, Raw, e.Header.Chunks[1].Codec)
	require.Less(t, e.Header.StoredBytes(), uint64(len(data)))
}

// A single-byte flip anywhere in a blob is caught: the blob does not parse or
// its decode fails, unless the flip hit a field the decoder ignores (a zstd
// window descriptor, say) and the decoded bytes are still the right ones.
// Wrong bytes are never returned.
func TestUnmarshal_NeverReturnsWrongBytes(t *testing.T) {
	c := newCodecs(t, 1024)
	data := append(compressible(2048), noise(700, 4)...)
	e, err := c.Encode("F32", []uint64{2, 687}, data)
	require.NoError(t, err)
	blob, err := e.AppendBinary(nil)
	require.NoError(t, err)
	caught := 0
	for i := range blob {
		bad := bytes.Clone(blob)
		bad[i] ^= 0x5a
		got, err := unmarshal(bad)
		var out []byte
		if err == nil {
			out, err = c.Decode(got)
		}
		if err == nil {
			require.Equal(t, data, out, "flip at byte %d returned wrong bytes", i)
			continue
		}
		caught++
		// A flipped version field reads as a future version, which is
		// refused just the same.
		require.True(t, errors.Is(err, errs.ErrCorrupt) || errors.Is(err, errs.ErrVersion), "flip at byte %d: %v", i, err)
	}
	require.Greater(t, caught, len(blob)*9/10, "most flips must be caught")
}

func TestUnmarshal_Truncated(t *testing.T) {
	c := newCodecs(t, 1024)
	e, err := c.Encode("F16", []uint64{3000}, compressible(3000))
	require.NoError(t, err)
	blob, err := e.AppendBinary(nil)
	require.NoError(t, err)
	for n := range len(blob) {
		_, err := unmarshal(blob[:n])
		require.ErrorIs(t, err, errs.ErrCorrupt, "truncated to %d", n)
	}
}

func TestParseHeader_VersionMismatch(t *testing.T) {
	c := newCodecs(t, 1024)
	e, err := c.Encode("F16", nil, compressible(10))
	require.NoError(t, err)
	blob, err := e.AppendBinary(nil)
	require.NoError(t, err)
	binary.LittleEndian.PutUint16(blob[4:], version+1)
	_, _, err = ParseHeader(blob)
	require.ErrorIs(t, err, errs.ErrVersion)
	require.NotErrorIs(t, err, errs.ErrCorrupt)
}

func TestDecode_UnknownCodec(t *testing.T) {
	c := newCodecs(t, 1024)
	e, err := c.Encode("U8", nil, compressible(100))
	require.NoError(t, err)
	e.Header.Chunks[0].Codec = 200
	_, err = c.Decode(e)
	require.ErrorIs(t, err, errs.ErrUnsupported)
}

func TestNew_RejectsBadChunkSize(t *testing.T) {
	for _, cs := range []int{1, MinChunkSize - 1, MaxChunkSize + 1} {
		_, err := New(&Options{ChunkSize: cs})
		require.Error(t, err, "chunk size %d", cs)
	}
}

func FuzzUnmarshal(f *testing.F) {
	c := newCodecs(f, 1024)
	for _, data := range [][]byte{{}, {1}, compressible(3000), noise(1500, 7)} {
		e, err := c.Encode("BF16", []uint64{uint64(len(data))}, data)
		require.NoError(f, err)
		blob, err := e.AppendBinary(nil)
		require.NoError(f, err)
		f.Add(blob)
	}
	f.Add([]byte("MCEN"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := unmarshal(b)
		if err != nil {
			return
		}
		// unmarshal bounds chunk count and stored bytes by the input, and
		// every stored chunk by the chunk size; Length is bounded by the
		// chunk count, so this allocation is at most 64 MiB per input
		// chunk header, and MinChunkSize keeps fuzz inputs far smaller.
		if e.Header.Length > 64<<20 {
			return
		}
		out, err := c.Decode(e)
		if err != nil {
			return
		}
		// What decodes must re-encode to the same logical bytes.
		e2, err := c.Encode(e.Header.DType, e.Header.Shape, out)
		require.NoError(t, err)
		out2, err := c.Decode(e2)
		require.NoError(t, err)
		require.Equal(t, out, out2)
	})
}

func BenchmarkCodecs(b *testing.B) {
	c := newCodecs(b, DefaultChunk)
	data := append(compressible(16<<20), noise(16<<20, 5)...)
	e, err := c.Encode("U8", nil, data)
	require.NoError(b, err)
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_, _ = c.Encode("U8", nil, data)
		}
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_, _ = c.Decode(e)
		}
	})
}

type tensor struct {
	dtype string
	data  []byte
}

// modelTensors reads every tensor of a safetensors model.
func modelTensors(tb testing.TB, path string) []tensor {
	tb.Helper()
	f, err := loader.Open(path)
	require.NoError(tb, err)
	defer f.Close()
	var ts []tensor
	for _, ti := range f.Tensors() {
		b, err := f.ReadTensor(ti.Name)
		require.NoError(tb, err)
		ts = append(ts, tensor{string(ti.DType), b})
	}
	return ts
}

func benchModels(tb testing.TB) []string {
	files, _ := filepath.Glob("../../shared/testdata/models/*.safetensors")
	if len(files) == 0 {
		files, _ = filepath.Glob("../testdata/models/*.safetensors")
	}
	return files
}

// groupedEntropy is the order-0 entropy of the byte-grouped streams of the
// float tensors, as a fraction of their size: what a per-byte entropy coder
// can reach. Other tensors count at their size.
func groupedEntropy(ts []tensor) float64 {
	var bits, total float64
	for _, t := range ts {
		w := groupWidth(t.dtype)
		total += float64(len(t.data))
		if w == 0 || len(t.data)%w != 0 {
			bits += 8 * float64(len(t.data))
			continue
		}
		for k := range w {
			var hist [256]float64
			for i := k; i < len(t.data); i += w {
				hist[t.data[i]]++
			}
			n := float64(len(t.data) / w)
			for _, c := range hist {
				if c > 0 {
					bits -= c * math.Log2(c/n)
				}
			}
		}
	}
	return bits / 8 / total
}

// shuffleZstd3 is the baseline: byte-shuffle each float tensor, zstd level 3.
func shuffleZstd3(tb testing.TB, ts []tensor) float64 {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(false))
	require.NoError(tb, err)
	defer enc.Close()
	var stored, total int
	for _, t := range ts {
		b := t.data
		if w := groupWidth(t.dtype); w > 0 && len(b)%w == 0 {
			b = make([]byte, len(t.data))
			shuffle(b, t.data, w)
		}
		stored += min(len(enc.EncodeAll(b, nil)), len(b))
		total += len(b)
	}
	return float64(stored) / float64(total)
}

func TestByteGroup_RatioOnRealModels(t *testing.T) {
	c := newCodecs(t, DefaultChunk)
	for _, p := range benchModels(t) {
		ts := modelTensors(t, p)
		var stored, logical uint64
		for _, tn := range ts {
			e, err := c.Encode(tn.dtype, nil, tn.data)
			require.NoError(t, err)
			out, err := c.Decode(e)
			require.NoError(t, err)
			require.True(t, bytes.Equal(tn.data, out))
			stored += e.Header.StoredBytes()
			logical += uint64(len(tn.data))
		}
		ratio := float64(stored) / float64(logical)
		ent := groupedEntropy(ts)
		base := shuffleZstd3(t, ts)
		t.Logf("%s: stored/logical %.4f, grouped order-0 entropy %.4f, shuffle+zstd3 %.4f", filepath.Base(p), ratio, ent, base)
		require.LessOrEqual(t, ratio, ent+0.02, "within 2 points of the order-0 bound")
		require.LessOrEqual(t, ratio, base, "never worse than byte-shuffle + zstd-3")
	}
}

// BenchmarkCodecs_Models encodes and decodes every tensor of the real models
// on one core and reports stored/logical with the per-core speed.
func BenchmarkCodecs_Models(b *testing.B) {
	c, err := New(&Options{Concurrency: 1})
	require.NoError(b, err)
	defer c.Close()
	for _, p := range benchModels(b) {
		ts := modelTensors(b, p)
		entries := make([]*entry, len(ts))
		var stored, logical int64
		for i, t := range ts {
			entries[i], err = c.Encode(t.dtype, nil, t.data)
			require.NoError(b, err)
			stored += int64(entries[i].Header.StoredBytes())
			logical += int64(len(t.data))
		}
		ratio := float64(stored) / float64(logical)
		ent := groupedEntropy(ts)
		b.Run(filepath.Base(p)+"/encode", func(b *testing.B) {
			b.SetBytes(logical)
			for b.Loop() {
				for _, t := range ts {
					_, _ = c.Encode(t.dtype, nil, t.data)
				}
			}
			b.ReportMetric(ratio, "ratio")
			b.ReportMetric(ent, "entropy")
		})
		b.Run(filepath.Base(p)+"/decode", func(b *testing.B) {
			b.SetBytes(logical)
			for b.Loop() {
				for _, e := range entries {
					_, _ = c.Decode(e)
				}
			}
			b.ReportMetric(ratio, "ratio")
		})
	}
}

// unshuffle must invert shuffle for every width and length, including the
// tails its wide paths leave to the byte loop.
func TestShuffle_RoundTrip(t *testing.T) {
	for _, w := range []int{2, 4, 8} {
		for _, n := range []int{0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 100, 1001} {
			src := noise(n*w, uint64(n*w+w))
			grouped := make([]byte, len(src))
			shuffle(grouped, src, w)
			streams := make([][]byte, w)
			for k := range streams {
				streams[k] = grouped[k*n : (k+1)*n]
			}
			out := make([]byte, len(src))
			unshuffle(out, streams, w)
			require.Equal(t, src, out, "w=%d n=%d", w, n)
		}
	}
}

// FuzzDecodeChunk feeds arbitrary payloads to every codec's decoder, past
// the header checksum that shields them in FuzzUnmarshal. Decoding must end
// in an error or in bytes whose checksum matched; never a panic, a hang or an
// allocation beyond the chunk.
func FuzzDecodeChunk(f *testing.F) {
	c := newCodecs(f, MinChunkSize*4)
	ts := modelTensors(f, "../testdata/models/posenet.bf16.safetensors")
	seeds := []tensor{
		{"BF16", ts[0].data[:4096]},
		{"F32", noise(4096, 3)},
		{"F16", make([]byte, 4096)},
		{"U8", compressible(4096)},
		{"F64", append(compressible(2048), noise(2048, 4)...)},
	}
	for _, s := range seeds {
		e, err := c.Encode(s.dtype, nil, s.data)
		require.NoError(f, err)
		f.Add(byte(e.Header.Chunks[0].Codec), uint16(len(s.data)), e.Header.Chunks[0].Sum, e.Chunks[0])
	}
	f.Fuzz(func(t *testing.T, codec byte, n uint16, sum uint32, payload []byte) {
		length := int(n)%(MinChunkSize*4) + 1
		if len(payload) > length && Codec(codec) != Raw {
			payload = payload[:length]
		}
		h := &Header{
			Length: uint64(length), ChunkSize: MinChunkSize * 4,
			Chunks: []ChunkInfo{{Codec: Codec(codec), StoredLen: uint32(len(payload)), Sum: sum}},
		}
		dst := make([]byte, length)
		if err := c.DecodeChunk(h, 0, dst, payload); err == nil {
			require.Equal(t, sum, checksum(dst))
		}
	})
}

// syntheticBF16 returns n BF16 weights drawn from N(0, 0.02²), like a
// trained transformer's, rounded to nearest even.
func syntheticBF16(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 2))
	b := make([]byte, 2*n)
	for i := range n {
		bits := math.Float32bits(float32(r.NormFloat64() * 0.02))
		bits += 0x7fff + (bits>>16)&1
		binary.LittleEndian.PutUint16(b[2*i:], uint16(bits>>16))
	}
	return b
}

// BenchmarkCodecs_LargeBF16 shows a 64 MiB tensor encoded and decoded with
// its 16 chunks spread over every core.
func BenchmarkCodecs_LargeBF16(b *testing.B) {
	c := newCodecs(b, DefaultChunk)
	data := syntheticBF16(32<<20, 1)
	e, err := c.Encode("BF16", nil, data)
	require.NoError(b, err)
	ratio := float64(e.Header.StoredBytes()) / float64(len(data))
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_, _ = c.Encode("BF16", nil, data)
		}
		b.ReportMetric(ratio, "ratio")
	})
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			_, _ = c.Decode(e)
		}
		b.ReportMetric(ratio, "ratio")
	})
	b.Run("decode-into", func(b *testing.B) {
		dst := make([]byte, len(data))
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			require.NoError(b, c.DecodeInto(dst, e))
		}
		b.ReportMetric(ratio, "ratio")
	})
}
