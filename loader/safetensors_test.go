package loader

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testmodels"
)

func writeFile(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.safetensors")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// decodeSix reads the six sample values as float64, whatever the dtype.
func decodeSix(t *testing.T, dt DType, b []byte) []float64 {
	t.Helper()
	size := dt.Size()
	require.Equal(t, 6*size, len(b))
	out := make([]float64, 6)
	for i := range out {
		e := b[i*size : (i+1)*size]
		switch dt {
		case U8:
			out[i] = float64(int8(e[0]))
		case I8:
			out[i] = float64(int8(e[0]))
		case U16, I16:
			out[i] = float64(int16(binary.LittleEndian.Uint16(e)))
		case U32, I32:
			out[i] = float64(int32(binary.LittleEndian.Uint32(e)))
		case F16:
			out[i] = f16(binary.LittleEndian.Uint16(e))
		case F32:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(e)))
		case F64:
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(e))
		default:
			t.Fatalf("no decoder for %s", dt)
		}
	}
	return out
}

// f16 converts the normal and zero half floats the samples use.
func f16(h uint16) float64 {
	if h&0x7fff == 0 {
		return 0
	}
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10&0x1f) - 15
	frac := 1 + float64(h&0x3ff)/1024
	return sign * math.Ldexp(frac, exp)
}

// The reference implementation's own sample files all parse, and every
// value reads back as written.
func TestOpen_ReferenceSamples(t *testing.T) {
	files, err := filepath.Glob("testdata/safetensors-samples/*.safetensors")
	require.NoError(t, err)
	require.Len(t, files, 10)
	want := []float64{-3, -2, -1, 0, 1, 2}
	for _, p := range files {
		f, err := Open(p)
		require.NoError(t, err, p)
		if filepath.Base(p) == "overall.safetensors" {
			require.Len(t, f.Tensors(), 9)
		} else {
			require.Len(t, f.Tensors(), 1)
			require.Equal(t, map[string]string{"test": "a"}, f.Metadata(), p)
		}
		for _, ti := range f.Tensors() {
			require.Equal(t, []uint64{6}, ti.Shape)
			b, err := f.ReadTensor(ti.Name)
			require.NoError(t, err)
			require.Equal(t, want, decodeSix(t, ti.DType, b), "%s %s", p, ti.Name)
		}
		require.NoError(t, f.Close())
	}
}

// Real models: every tensor's bytes equal the file's bytes at the offsets an
// independent parse (encoding/json into a map) finds.
func TestOpen_RealModels(t *testing.T) {
	files, _ := filepath.Glob("../testdata/models/*.safetensors")
	shared, _ := filepath.Glob("../../shared/testdata/models/*.safetensors")
	files = append(files, shared...)
	require.NotEmpty(t, files)
	for _, p := range files {
		raw, err := os.ReadFile(p)
		require.NoError(t, err)
		n := binary.LittleEndian.Uint64(raw)
		var idx map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(raw[8:8+n], &idx))
		f, err := Open(p)
		require.NoError(t, err, p)
		count := 0
		for name, msg := range idx {
			if name == "__metadata__" {
				continue
			}
			var ti struct {
				DType   string    `json:"dtype"`
				Shape   []uint64  `json:"shape"`
				Offsets [2]uint64 `json:"data_offsets"`
			}
			require.NoError(t, json.Unmarshal(msg, &ti))
			got, err := f.ReadTensor(name)
			require.NoError(t, err)
			require.Equal(t, raw[8+n+ti.Offsets[0]:8+n+ti.Offsets[1]], got, "%s %s", p, name)
			info, ok := f.Tensor(name)
			require.True(t, ok)
			require.Equal(t, ti.DType, string(info.DType))
			require.Equal(t, ti.Shape, info.Shape)
			count++
		}
		require.Len(t, f.Tensors(), count)
		require.NoError(t, f.Close())
	}
}

// Every malformed file is refused with an error that names the file and its
// defect, quickly and without allocating in proportion to any length the
// file claims.
func TestOpen_RefusesMalformed(t *testing.T) {
	cases := testmodels.Malformed()
	require.GreaterOrEqual(t, len(cases), 20)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := writeFile(t, tc.File)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			f, err := Open(p)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			require.Error(t, err)
			require.Nil(t, f)
			require.ErrorIs(t, err, errs.ErrInvalidModel)
			require.Contains(t, err.Error(), p, "error must name the file")
			require.Contains(t, err.Error(), tc.Want)
			require.NotContains(t, err.Error(), "\n")
			// Generous bounds: a refusal is cheap, never proportional to a
			// claimed length.
			require.Less(t, elapsed, time.Second)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<20))
		})
	}
}

func TestOpen_ZeroSizedTensorsAndNoTensors(t *testing.T) {
	p := writeFile(t, testmodels.Build(`{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, []byte{7, 9}))
	f, err := Open(p)
	require.NoError(t, err)
	b, err := f.ReadTensor("z")
	require.NoError(t, err)
	require.Empty(t, b)
	b, err = f.ReadTensor("a")
	require.NoError(t, err)
	require.Equal(t, []byte{7, 9}, b)
	_, err = f.ReadTensor("nope")
	require.ErrorIs(t, err, errs.ErrNotFound)
	require.NoError(t, f.Close())
	_, err = f.ReadTensor("a")
	require.ErrorIs(t, err, errs.ErrClosed)

	f, err = Open(writeFile(t, testmodels.Build(`{"__metadata__":null}  `, nil)))
	require.NoError(t, err)
	require.Empty(t, f.Tensors())
	require.NoError(t, f.Close())
}

// A file truncated under a live mapping is an error from ReadTensor, not a
// SIGBUS that kills the process.
func TestFile_TruncatedWhileMapped(t *testing.T) {
	data := make([]byte, 1<<20)
	head := `{"a":{"dtype":"U8","shape":[1048576],"data_offsets":[0,1048576]}}`
	p := writeFile(t, testmodels.Build(head, data))
	f, err := Open(p)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, os.Truncate(p, 100))
	_, err = f.ReadTensor("a")
	require.Error(t, err)
	require.Contains(t, err.Error(), "truncated")
}

func TestStat_ChangesWithContent(t *testing.T) {
	p := writeFile(t, testmodels.Build(testmodels.OKHead, make([]byte, 8)))
	a, err := Stat(p)
	require.NoError(t, err)
	f, err := Open(p)
	require.NoError(t, err)
	require.Equal(t, a, f.Identity())
	require.NoError(t, f.Close())
	require.NoError(t, os.WriteFile(p, testmodels.Build(testmodels.OKHead, []byte{1, 2, 3, 4, 5, 6, 7, 8}), 0o644))
	mt := time.Unix(0, a.ModTime).Add(time.Second)
	require.NoError(t, os.Chtimes(p, mt, mt))
	b, err := Stat(p)
	require.NoError(t, err)
	require.NotEqual(t, a.String(), b.String())
}

func FuzzParseSafetensors(f *testing.F) {
	samples, _ := filepath.Glob("testdata/safetensors-samples/*.safetensors")
	for _, p := range samples {
		b, err := os.ReadFile(p)
		require.NoError(f, err)
		f.Add(b)
	}
	for _, tc := range testmodels.Malformed() {
		if len(tc.File) < 4096 {
			f.Add(tc.File)
		}
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		checkBlob(t, file, Safetensors)
		if len(file) < 8 {
			return
		}
		n := binary.LittleEndian.Uint64(file)
		if n > uint64(len(file)-8) {
			return // Open refuses this before parsing
		}
		h, err := parseSafetensors(file[8:8+n], uint64(len(file)))
		if err != nil {
			return
		}
		// Whatever is accepted must be safe to read.
		for _, ti := range h.tensors {
			require.LessOrEqual(t, ti.Offset+ti.Length, uint64(len(file)))
			require.GreaterOrEqual(t, ti.Offset, h.dataOff)
			_ = file[ti.Offset : ti.Offset+ti.Length]
		}
	})
}
