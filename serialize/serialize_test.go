package serialize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
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
			got, err := Unmarshal(blob)
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
		got, err := Unmarshal(bad)
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
		_, err := Unmarshal(blob[:n])
		require.ErrorIs(t, err, errs.ErrCorrupt, "truncated to %d", n)
	}
}

func TestParseHeader_VersionMismatch(t *testing.T) {
	c := newCodecs(t, 1024)
	e, err := c.Encode("F16", nil, compressible(10))
	require.NoError(t, err)
	blob, err := e.AppendBinary(nil)
	require.NoError(t, err)
	binary.LittleEndian.PutUint16(blob[4:], Version+1)
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
		e, err := Unmarshal(b)
		if err != nil {
			return
		}
		// Unmarshal bounds chunk count and stored bytes by the input, and
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

// BenchmarkCodecs_Models encodes and decodes the tensor data of the real
// models and reports the stored/logical ratio with the speeds.
func BenchmarkCodecs_Models(b *testing.B) {
	files, _ := filepath.Glob("../../shared/testdata/models/*.safetensors")
	if len(files) == 0 {
		files, _ = filepath.Glob("../testdata/models/*.safetensors")
	}
	c := newCodecs(b, DefaultChunk)
	for _, p := range files {
		raw, err := os.ReadFile(p)
		require.NoError(b, err)
		data := raw[8+binary.LittleEndian.Uint64(raw):]
		e, err := c.Encode("", nil, data)
		require.NoError(b, err)
		ratio := float64(e.Header.StoredBytes()) / float64(len(data))
		b.Run(filepath.Base(p)+"/encode", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				_, _ = c.Encode("", nil, data)
			}
			b.ReportMetric(ratio, "ratio")
		})
		b.Run(filepath.Base(p)+"/decode", func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				_, _ = c.Decode(e)
			}
			b.ReportMetric(ratio, "ratio")
		})
	}
}
