package loader

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// buildFile assembles a safetensors file from a raw JSON header and data.
func buildFile(head string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(head)))
	b = append(b, head...)
	return append(b, data...)
}

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

const okHead = `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`

// malformed lists files that must be refused, each with a phrase the error
// must contain so that a user learns what is wrong.
func malformed() map[string]struct {
	file []byte
	want string
} {
	eight := make([]byte, 8)
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)
	type c = struct {
		file []byte
		want string
	}
	lie := func(n uint64, rest []byte) []byte {
		return append(binary.LittleEndian.AppendUint64(nil, n), rest...)
	}
	return map[string]c{
		"empty file":             {nil, "too short"},
		"truncated prefix":       {[]byte{1, 2, 3}, "too short"},
		"zero header length":     {lie(0, eight), "empty header"},
		"header past EOF":        {lie(1000, []byte(okHead)), "past the end"},
		"header length huge":     {lie(math.MaxUint64, []byte(okHead)), "exceeds"},
		"header length 100MB+1":  {lie(100_000_001, []byte(okHead)), "exceeds"},
		"truncated data":         {buildFile(okHead, make([]byte, 4)), "past the 4 bytes"},
		"extra data":             {buildFile(okHead, make([]byte, 12)), "holds 12 bytes"},
		"not JSON":               {buildFile("{not json}", nil), "header JSON"},
		"not an object":          {buildFile(`["a"]`, nil), "start with '{'"},
		"invalid UTF-8":          {buildFile("{\"\xff\":1}", nil), "UTF-8"},
		"deep nesting":           {buildFile(`{"a":`+deep+`}`, nil), "want \"{\""},
		"deep nesting metadata":  {buildFile(`{"__metadata__":{"k":`+deep+`}}`, nil), "want a string"},
		"unknown dtype":          {buildFile(`{"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}}`, eight), "unknown dtype"},
		"shape size mismatch":    {buildFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight), "12 bytes, data_offsets span 8"},
		"shape overflow":         {buildFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, eight), "overflows"},
		"negative dim":           {buildFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight), "non-negative"},
		"fractional offset":      {buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.0]}}`, eight), "non-negative"},
		"offsets reversed":       {buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, eight), "end before"},
		"three offsets":          {buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}`, eight), "exactly two"},
		"offset out of range":    {buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, eight), "gap in data"},
		"huge offsets":           {buildFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[18446744073709551614,18446744073709551615]}}`, eight), "gap in data"},
		"overlapping tensors":    {buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "overlaps"},
		"gap between tensors":    {buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}`, eight), "gap in data"},
		"duplicate tensor name":  {buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "appears twice"},
		"duplicate field":        {buildFile(`{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, eight), "dtype given twice"},
		"missing shape":          {buildFile(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, eight), "no shape"},
		"unknown field":          {buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, eight), "unknown field"},
		"metadata not strings":   {buildFile(`{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, eight), "want a string"},
		"metadata duplicate key": {buildFile(`{"__metadata__":{"k":"1","k":"2"}}`, nil), "appears twice"},
		"trailing garbage":       {buildFile(okHead+`x`, eight), "after its JSON"},
		"too many dims":          {buildFile(`{"a":{"dtype":"U8","shape":[`+strings.Repeat("1,", 64)+`1],"data_offsets":[0,1]}}`, eight[:1]), "more than 64 dims"},
		"tensor is a string":     {buildFile(`{"a":"F32"}`, nil), "want \"{\""},
	}
}

// Every malformed file is refused with an error that names the file and its
// defect, quickly and without allocating in proportion to any length the
// file claims.
func TestOpen_RefusesMalformed(t *testing.T) {
	cases := malformed()
	require.GreaterOrEqual(t, len(cases), 20)
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := writeFile(t, tc.file)
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
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "\n")
			// Generous bounds: a refusal is cheap, never proportional to a
			// claimed length.
			require.Less(t, elapsed, time.Second)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(64<<20))
		})
	}
}

func TestOpen_ZeroSizedTensorsAndNoTensors(t *testing.T) {
	p := writeFile(t, buildFile(`{"z":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, []byte{7, 9}))
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

	f, err = Open(writeFile(t, buildFile(`{"__metadata__":null}  `, nil)))
	require.NoError(t, err)
	require.Empty(t, f.Tensors())
	require.NoError(t, f.Close())
}

// A file truncated under a live mapping is an error from ReadTensor, not a
// SIGBUS that kills the process.
func TestFile_TruncatedWhileMapped(t *testing.T) {
	data := make([]byte, 1<<20)
	head := `{"a":{"dtype":"U8","shape":[1048576],"data_offsets":[0,1048576]}}`
	p := writeFile(t, buildFile(head, data))
	f, err := Open(p)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, os.Truncate(p, 100))
	_, err = f.ReadTensor("a")
	require.Error(t, err)
	require.Contains(t, err.Error(), "truncated")
}

func TestStat_ChangesWithContent(t *testing.T) {
	p := writeFile(t, buildFile(okHead, make([]byte, 8)))
	a, err := Stat(p)
	require.NoError(t, err)
	f, err := Open(p)
	require.NoError(t, err)
	require.Equal(t, a, f.Identity())
	require.NoError(t, f.Close())
	require.NoError(t, os.WriteFile(p, buildFile(okHead, []byte{1, 2, 3, 4, 5, 6, 7, 8}), 0o644))
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
	for _, tc := range malformed() {
		if len(tc.file) < 4096 {
			f.Add(tc.file)
		}
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		if len(file) < 8 {
			return
		}
		n := binary.LittleEndian.Uint64(file)
		if n > uint64(len(file)-8) {
			return // Open refuses this before parsing
		}
		h, err := ParseSafetensors(file[8:8+n], uint64(len(file)))
		if err != nil {
			return
		}
		// Whatever is accepted must be safe to read.
		for _, ti := range h.Tensors {
			require.LessOrEqual(t, ti.Offset+ti.Length, uint64(len(file)))
			require.GreaterOrEqual(t, ti.Offset, h.DataOff)
			_ = file[ti.Offset : ti.Offset+ti.Length]
		}
	})
}
