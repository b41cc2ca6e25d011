package loader

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

const formatsDir = "testdata/formats"

type expectedTensor struct {
	DType string   `json:"dtype"`
	Shape []uint64 `json:"shape"`
	Hex   string   `json:"hex"`
}

// expected.json is written by testdata/formats/gen.py, the independent
// writer of these files (Python's struct, zipfile and json only).
func loadExpected(t *testing.T) map[string]map[string]expectedTensor {
	b, err := os.ReadFile(filepath.Join(formatsDir, "expected.json"))
	require.NoError(t, err)
	var m map[string]map[string]expectedTensor
	require.NoError(t, json.Unmarshal(b, &m))
	return m
}

// Every tensor of every fixture reads back as the writer computed it, byte
// for byte: GGUF (v2, v3, quantized), .npy (v1-3, big-endian, Fortran order,
// complex, scalar, empty), .npz (stored and deflated) and a sharded
// checkpoint.
func TestFormats_RoundTrip(t *testing.T) {
	want := loadExpected(t)
	require.Len(t, want, 16)
	for file, tensors := range want {
		t.Run(file, func(t *testing.T) {
			src, err := OpenSource(filepath.Join(formatsDir, file))
			require.NoError(t, err)
			defer src.Close()
			require.Len(t, src.Tensors(), len(tensors))
			for name, w := range tensors {
				ti, ok := src.Tensor(name)
				require.True(t, ok, name)
				require.Equal(t, w.DType, string(ti.DType), name)
				if len(w.Shape) == 0 {
					require.Empty(t, ti.Shape, name)
				} else {
					require.Equal(t, w.Shape, ti.Shape, name)
				}
				b, err := src.ReadTensor(name)
				require.NoError(t, err, name)
				require.Equal(t, w.Hex, hex.EncodeToString(b), name)
				require.EqualValues(t, len(b), ti.Length, name)
			}
		})
	}
}

func TestFormats_Detected(t *testing.T) {
	for file, f := range map[string]Format{"v3.gguf": GGUF, "f4_c.npy": NPY, "stored.npz": NPZ, "gen.py": Plain, "sharded": ShardedFormat} {
		src, err := OpenSource(filepath.Join(formatsDir, file))
		require.NoError(t, err, file)
		require.Equal(t, f, src.Format(), file)
		src.Close()
	}
	// GGUF and NumPy magic without the extension.
	dir := t.TempDir()
	for name, from := range map[string]string{"model.bin": "v2.gguf", "array": "u1.npy"} {
		b, err := os.ReadFile(filepath.Join(formatsDir, from))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
		f, err := Open(filepath.Join(dir, name))
		require.NoError(t, err)
		require.NotEqual(t, Plain, f.Format(), name)
		f.Close()
	}
}

func TestGGUF_Metadata(t *testing.T) {
	f, err := Open(filepath.Join(formatsDir, "v3.gguf"))
	require.NoError(t, err)
	defer f.Close()
	h := f.gguf
	require.NotNil(t, h)
	require.EqualValues(t, 3, h.version)
	require.EqualValues(t, 64, h.alignment)
	require.Zero(t, h.dataOffset%64)
	want := map[string]any{
		"general.architecture": "llama", "general.alignment": uint32(64),
		"test.u8": uint8(200), "test.i8": int8(-100), "test.u16": uint16(60000), "test.i16": int16(-30000),
		"test.u32": uint32(4000000000), "test.i32": int32(-2000000000), "test.f32": float32(0.5),
		"test.bool": true, "test.u64": uint64(1<<63 + 5), "test.i64": int64(-1 << 62), "test.f64": -1.25,
	}
	for k, v := range want {
		kv, ok := h.lookup(k)
		require.True(t, ok, k)
		require.Equal(t, v, kv.value, k)
	}
	kv, _ := h.lookup("tokenizer.ggml.tokens")
	require.Equal(t, ggufArrayValue{elem: ggufString, values: []string{"<s>", "</s>", "héllo", ""}}, kv.value)
	kv, _ = h.lookup("test.nested")
	require.Equal(t, ggufArrayValue{elem: ggufArray, values: []ggufArrayValue{
		{elem: ggufInt32, values: []int32{1, 2, 3}}, {elem: ggufInt32, values: []int32{}}, {elem: ggufFloat32, values: []float32{1.5}},
	}}, kv.value)
	require.Equal(t, "llama", f.Metadata()["general.architecture"])
	require.Equal(t, []ggmlType{0, 1, 2, 12, 8, 14, 26, 30}, h.types)
	v2, err := Open(filepath.Join(formatsDir, "v2.gguf"))
	require.NoError(t, err)
	defer v2.Close()
	require.EqualValues(t, 2, v2.gguf.version)
	require.EqualValues(t, ggufDefaultAlignment, v2.gguf.alignment)
}

func TestPlainFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "tokenizer.json")
	require.NoError(t, os.WriteFile(p, []byte(`{"vocab": {}}`), 0o644))
	f, err := Open(p)
	require.NoError(t, err)
	require.Equal(t, Plain, f.Format())
	require.Len(t, f.Tensors(), 1)
	b, err := f.ReadTensor(PlainTensor)
	require.NoError(t, err)
	require.Equal(t, `{"vocab": {}}`, string(b))
	require.NoError(t, f.Close())
	// An empty file is an empty entry, not an error.
	e := filepath.Join(dir, "empty")
	require.NoError(t, os.WriteFile(e, nil, 0o644))
	f, err = Open(e)
	require.NoError(t, err)
	b, err = f.ReadTensor(PlainTensor)
	require.NoError(t, err)
	require.Empty(t, b)
	require.NoError(t, f.Close())
}

// copyDir copies the sharded fixture to a temporary directory to damage it.
func copySharded(t *testing.T) string {
	dir := t.TempDir()
	ents, err := os.ReadDir(filepath.Join(formatsDir, "sharded"))
	require.NoError(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(formatsDir, "sharded", e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644))
	}
	return dir
}

func TestSharded_Refusals(t *testing.T) {
	index := func(weightMap string) string { return `{"metadata": {}, "weight_map": ` + weightMap + `}` }
	for name, tc := range map[string]struct {
		index  string
		remove string
		want   string
	}{
		"missing shard":       {remove: "model-00002-of-00002.safetensors", want: "shard model-00002-of-00002.safetensors"},
		"listed twice":        {index: index(`{"a": "model-00001-of-00002.safetensors", "a": "model-00001-of-00002.safetensors"}`), want: "listed twice"},
		"path traversal":      {index: index(`{"a": "../model-00001-of-00002.safetensors"}`), want: "not a file name"},
		"absolute":            {index: index(`{"a": "/etc/passwd"}`), want: "not a file name"},
		"wrong shard":         {index: index(`{"a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}`), want: "which the index places in"},
		"tensor not in shard": {index: index(`{"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors", "d": "model-00002-of-00002.safetensors"}`), want: `tensor "d" is not in its shard`},
		"no weight_map":       {index: `{"metadata": {}}`, want: "no \"weight_map\""},
		"not json":            {index: `{"weight_map": {"a": 1}}`, want: "expected a string"},
		"trailing":            {index: index(`{}`) + `{}`, want: "bytes after"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := copySharded(t)
			if tc.index != "" {
				require.NoError(t, os.WriteFile(filepath.Join(dir, ShardIndexName), []byte(tc.index), 0o644))
			}
			if tc.remove != "" {
				require.NoError(t, os.Remove(filepath.Join(dir, tc.remove)))
			}
			_, err := OpenSharded(dir)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.Contains(t, err.Error(), dir)
		})
	}
	// A shard holding a tensor that another shard holds too.
	dir := copySharded(t)
	b, err := os.ReadFile(filepath.Join(dir, "model-00001-of-00002.safetensors"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "model-00002-of-00002.safetensors"), b, 0o644))
	_, err = OpenSharded(dir)
	require.ErrorContains(t, err, "in both")
}

// gg builds GGUF bytes for the refusal tests.
type gg struct{ bytes.Buffer }

func (g *gg) u32(v uint32) *gg { _ = binary.Write(g, binary.LittleEndian, v); return g }
func (g *gg) u64(v uint64) *gg { _ = binary.Write(g, binary.LittleEndian, v); return g }
func (g *gg) str(s string) *gg { g.u64(uint64(len(s))); g.WriteString(s); return g }
func ggufHead(version uint32, tensors, kvs uint64) *gg {
	g := &gg{}
	g.WriteString("GGUF")
	return g.u32(version).u64(tensors).u64(kvs)
}

// tensor appends one tensor info.
func (g *gg) tensor(name string, typ uint32, off uint64, ne ...uint64) *gg {
	g.str(name).u32(uint32(len(ne)))
	for _, d := range ne {
		g.u64(d)
	}
	return g.u32(typ).u64(off)
}

func (g *gg) pad(n int) *gg { g.Write(make([]byte, n)); return g }

// Each known way to attack a GGUF parser is refused with a clear error, in
// bounded time and memory.
func TestGGUF_Refusals(t *testing.T) {
	cases := map[string]struct {
		b    []byte
		want string
	}{
		"v1":                  {ggufHead(1, 0, 0).pad(64).Bytes(), "version 1"},
		"big-endian":          {ggufHead(0x03000000, 0, 0).pad(64).Bytes(), "big-endian"},
		"version 99":          {ggufHead(99, 0, 0).pad(64).Bytes(), "version 99"},
		"huge tensor count":   {ggufHead(3, 1<<62, 0).pad(64).Bytes(), "tensors cannot fit"},
		"huge kv count":       {ggufHead(3, 0, 1<<60).pad(64).Bytes(), "pairs cannot fit"},
		"huge string":         {ggufHead(3, 0, 1).u64(1 << 62).pad(64).Bytes(), "runs past the end"},
		"huge array":          {ggufHead(3, 0, 1).str("k").u32(9).u32(10).u64(1 << 61).pad(64).Bytes(), "cannot fit"},
		"array count × size":  {ggufHead(3, 0, 1).str("k").u32(9).u32(12).u64(1<<61 + 1).pad(64).Bytes(), "cannot fit"},
		"nested arrays":       {nested(200), "nested more than"},
		"unknown value type":  {ggufHead(3, 0, 1).str("k").u32(13).pad(64).Bytes(), "unknown value type"},
		"duplicate key":       {ggufHead(3, 0, 2).str("k").u32(0).pad(1).str("k").u32(0).pad(64).Bytes(), "given twice"},
		"alignment not u32":   {ggufHead(3, 0, 1).str("general.alignment").u32(10).u64(32).pad(64).Bytes(), "not a uint32"},
		"alignment zero":      {ggufHead(3, 0, 1).str("general.alignment").u32(4).u32(0).pad(64).Bytes(), "power of two"},
		"alignment 24":        {ggufHead(3, 0, 1).str("general.alignment").u32(4).u32(24).pad(64).Bytes(), "power of two"},
		"bool 2":              {ggufHead(3, 0, 1).str("k").u32(7).pad(0).u32(2).pad(64).Bytes(), "neither 0 nor 1"},
		"zero dims":           {ggufHead(3, 1, 0).tensor("t", 0, 0).pad(64).Bytes(), "0 dimensions"},
		"five dims":           {ggufHead(3, 1, 0).tensor("t", 0, 0, 1, 1, 1, 1, 1).pad(64).Bytes(), "5 dimensions"},
		"zero dim":            {ggufHead(3, 1, 0).tensor("t", 0, 0, 4, 0).pad(64).Bytes(), "dimension 1 is 0"},
		"product wraps":       {ggufHead(3, 1, 0).tensor("t", 0, 0, 1<<32, 1<<32).pad(64).Bytes(), "overflows"},
		"bytes overflow":      {ggufHead(3, 1, 0).tensor("t", 0, 0, 1<<62, 2).pad(64).Bytes(), "overflows"},
		"dim over int64":      {ggufHead(3, 1, 0).tensor("t", 0, 0, 1<<63).pad(64).Bytes(), "dimension 0 is"},
		"unknown ggml type":   {ggufHead(3, 1, 0).tensor("t", 4, 0, 32).pad(64).Bytes(), "unknown ggml type 4"},
		"partial block":       {ggufHead(3, 1, 0).tensor("t", 2, 0, 31).pad(64).Bytes(), "block of 32"},
		"misaligned offset":   {ggufHead(3, 1, 0).tensor("t", 0, 4, 1).pad(128).Bytes(), "not a multiple of the alignment"},
		"offset out of range": {ggufHead(3, 1, 0).tensor("t", 0, 1<<40, 1).pad(128).Bytes(), "run past the end"},
		"tensor past end":     {ggufHead(3, 1, 0).tensor("t", 0, 0, 1024).pad(128).Bytes(), "run past the end"},
		"overlap":             {ggufHead(3, 2, 0).tensor("a", 0, 0, 16).tensor("b", 0, 32, 16).pad(256).Bytes(), "overlap"},
		"duplicate tensor":    {ggufHead(3, 2, 0).tensor("a", 0, 0, 8).tensor("a", 0, 32, 8).pad(256).Bytes(), "given twice"},
		"long name":           {ggufHead(3, 1, 0).tensor(strings.Repeat("n", 65), 0, 0, 8).pad(256).Bytes(), "longer than 64"},
		"truncated":           {ggufHead(3, 0, 1).str("k").u32(6).pad(2).Bytes(), "unexpected end"},
		"no magic":            {[]byte("GGUX\x03\x00\x00\x00" + strings.Repeat("\x00", 32)), "no GGUF magic"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			refusedCheaply(t, func() error { _, err := parseGGUFBytes(tc.b); return err }, tc.want)
			// Through Open and OpenBlob, the error names the file.
			p := filepath.Join(t.TempDir(), "hostile.gguf")
			require.NoError(t, os.WriteFile(p, tc.b, 0o644))
			for how, open := range openers {
				_, err := open(t, p)
				require.ErrorIs(t, err, errs.ErrInvalidModel, how)
				require.Contains(t, err.Error(), p, how)
				require.Contains(t, err.Error(), tc.want, how)
			}
		})
	}
}

// refusedCheaply checks that parse fails with want, allocating under 1 MiB
// although the hostile inputs claim up to exabytes. (Time is bounded by the
// same checks: nothing is looped over before it is checked against the
// bytes left; a hang would meet the test timeout.)
func refusedCheaply(t *testing.T, parse func() error, want string) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := parse()
	runtime.ReadMemStats(&after)
	require.Error(t, err)
	require.Contains(t, err.Error(), want)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(1<<20), "allocated too much")
}

// nested builds a value of arrays nested depth deep.
func nested(depth int) []byte {
	g := ggufHead(3, 0, 1).str("k").u32(9)
	for range depth - 1 {
		g.u32(9).u64(1)
	}
	g.u32(0).u64(0)
	return g.pad(64).Bytes()
}

func npyFile(version byte, header string, data []byte) []byte {
	var b bytes.Buffer
	b.WriteString(npyMagic)
	b.WriteByte(version)
	b.WriteByte(0)
	if version == 1 {
		_ = binary.Write(&b, binary.LittleEndian, uint16(len(header)))
	} else {
		_ = binary.Write(&b, binary.LittleEndian, uint32(len(header)))
	}
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func TestNPY_Refusals(t *testing.T) {
	h := func(d string) string { return d + "\n" }
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"version 4":       {npyFile(4, h("{}"), nil), "version 4.0"},
		"huge header":     {append([]byte(npyMagic+"\x02\x00"), 0xff, 0xff, 0xff, 0x7f), "exceeds"},
		"header past end": {append([]byte(npyMagic+"\x01\x00"), 0xff, 0x7f), "runs past the end"},
		"object dtype":    {npyFile(1, h("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"), make([]byte, 8)), "dtype \"|O\""},
		"structured":      {npyFile(1, h("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }"), make([]byte, 4)), "descr"},
		"native order":    {npyFile(1, h("{'descr': '=f4', 'fortran_order': False, 'shape': (1,), }"), make([]byte, 4)), "native byte order"},
		"missing shape":   {npyFile(1, h("{'descr': '<f4', 'fortran_order': False}"), nil), "no \"shape\""},
		"duplicate key":   {npyFile(1, h("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }"), make([]byte, 4)), "given twice"},
		"unknown key":     {npyFile(1, h("{'descr': '<f4', 'x': 1, 'fortran_order': False, 'shape': (1,), }"), make([]byte, 4)), "unknown header key"},
		"negative dim":    {npyFile(1, h("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }"), nil), "non-negative"},
		"overflow":        {npyFile(1, h("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"), nil), "overflows"},
		"short data":      {npyFile(1, h("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }"), make([]byte, 8)), "need 12"},
		"long data":       {npyFile(1, h("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }"), make([]byte, 8)), "need 4"},
		"no newline":      {npyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", make([]byte, 4)), "newline"},
		"fortran maybe":   {npyFile(1, h("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }"), make([]byte, 4)), "not True or False"},
		"too many dims":   {npyFile(1, h("{'descr': '<f4', 'fortran_order': False, 'shape': ("+strings.Repeat("1,", 65)+"), }"), make([]byte, 4)), "more than 64"},
		"v1 non-ascii":    {npyFile(1, h("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'é': 1}"), make([]byte, 4)), "not ASCII"},
	} {
		t.Run(name, func(t *testing.T) {
			refusedCheaply(t, func() error { _, err := parseNPY(tc.b); return err }, tc.want)
			refusedCheaply(t, func() error { _, err := OpenBlob(newMemBlob("/mem/x.npy", tc.b), ""); return err }, tc.want)
		})
	}
}

func zipOf(t *testing.T, method uint16, members map[string][]byte) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for name, data := range members {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
		require.NoError(t, err)
		_, err = w.Write(data)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return b.Bytes()
}

func TestNPZ_Refusals(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(formatsDir, "u1.npy"))
	require.NoError(t, err)
	// A deflated member that declares far more than its stream can hold.
	bomb := zipOf(t, zip.Deflate, map[string][]byte{"a.npy": good})
	i := bytes.Index(bomb, []byte("PK\x01\x02")) // central directory entry
	binary.LittleEndian.PutUint32(bomb[i+24:], 1<<31)
	// A compression method numpy never writes (the zip writer refuses to).
	badMethod := zipOf(t, zip.Store, map[string][]byte{"a.npy": good})
	binary.LittleEndian.PutUint16(badMethod[8:], 12)
	binary.LittleEndian.PutUint16(badMethod[bytes.Index(badMethod, []byte("PK\x01\x02"))+10:], 12)
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"not a zip":       {[]byte("PK\x03\x04 nothing"), "not a valid zip"},
		"not npy member":  {zipOf(t, zip.Store, map[string][]byte{"a.txt": good}), "not a .npy member"},
		"bad npy member":  {zipOf(t, zip.Deflate, map[string][]byte{"a.npy": []byte("garbage")}), "no \\x93NUMPY magic"},
		"declares a bomb": {bomb, "more than DEFLATE can produce"},
		"bad method":      {badMethod, "compression method 12"},
	} {
		t.Run(name, func(t *testing.T) {
			refusedCheaply(t, func() error { _, err := parseNPZBytes(tc.b); return err }, tc.want)
			refusedCheaply(t, func() error { _, err := OpenBlob(newMemBlob("/mem/x.npz", tc.b), ""); return err }, tc.want)
		})
	}
	// A member whose bytes were changed fails on read (CRC or DEFLATE).
	for _, method := range []uint16{zip.Store, zip.Deflate} {
		z := zipOf(t, method, map[string][]byte{"a.npy": good})
		p := filepath.Join(t.TempDir(), "x.npz")
		zr, err := zip.NewReader(bytes.NewReader(z), int64(len(z)))
		require.NoError(t, err)
		off, err := zr.File[0].DataOffset()
		require.NoError(t, err)
		z[off+int64(zr.File[0].CompressedSize64)-3] ^= 0xff
		require.NoError(t, os.WriteFile(p, z, 0o644))
		f, err := Open(p)
		if err == nil {
			_, err = f.ReadTensor("a")
			f.Close()
		}
		require.ErrorIs(t, err, errs.ErrInvalidModel, "method %d", method)
		require.Contains(t, err.Error(), p)
	}
}

func fixtureSeeds(f *testing.F, ext string) {
	ents, _ := os.ReadDir(formatsDir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ext) {
			b, err := os.ReadFile(filepath.Join(formatsDir, e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
}

func FuzzParseGGUF(f *testing.F) {
	fixtureSeeds(f, ".gguf")
	f.Add(nested(6))
	f.Add(ggufHead(3, 2, 0).tensor("a", 0, 0, 16).tensor("b", 0, 32, 16).pad(256).Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		checkBlob(t, b, GGUF)
		h, err := parseGGUFBytes(b)
		if err != nil {
			return
		}
		for _, ti := range h.tensors {
			if ti.Offset+ti.Length > uint64(len(b)) || ti.Offset < h.dataOffset {
				t.Fatalf("tensor %q out of range", ti.Name)
			}
		}
	})
}

func FuzzParseNPY(f *testing.F) {
	fixtureSeeds(f, ".npy")
	f.Fuzz(func(t *testing.T, b []byte) {
		checkBlob(t, b, NPY)
		a, err := parseNPY(b)
		if err != nil {
			return
		}
		if a.tensor.Offset+a.tensor.Length != uint64(len(b)) {
			t.Fatal("data does not end the file")
		}
		data := bytes.Clone(b[a.tensor.Offset:])
		r := a.read()
		if r.swap > 1 {
			swapBytes(data, r.swap)
		}
		if r.fortran {
			if out := fortranToC(data, a.tensor.Shape, r.elem); len(out) != len(data) {
				t.Fatal("transpose changed the length")
			}
		}
	})
}

func FuzzParseNPZ(f *testing.F) {
	fixtureSeeds(f, ".npz")
	f.Fuzz(func(t *testing.T, b []byte) {
		checkBlob(t, b, NPZ)
		ts, rs, err := parseNPZ(&fileBytes{size: uint64(len(b)), mapped: b})
		if err != nil {
			return
		}
		for i, ti := range ts {
			if ti.Offset+rs[i].stored > uint64(len(b)) {
				t.Fatalf("member %q out of range", ti.Name)
			}
			if rs[i].deflate {
				_, _ = inflate(b[ti.Offset:ti.Offset+rs[i].stored], rs[i].skip, ti.Length, rs[i].crc)
			}
		}
	})
}

func FuzzParseShardIndex(f *testing.F) {
	b, err := os.ReadFile(filepath.Join(formatsDir, "sharded", ShardIndexName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"weight_map": {"a": "../x"}}`))
	f.Add([]byte(`{"weight_map": {"a": "x", "a": "y"}, "metadata": {"n": [1, {"x": null}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := ParseShardIndex(b)
		fromBlob, berr := ReadShardIndexBlob(newMemBlob("/mem/i.json", b))
		if (err == nil) != (berr == nil) {
			t.Fatalf("from bytes: %v, from a Blob: %v", err, berr)
		}
		if err != nil {
			return
		}
		require.Equal(t, idx, fromBlob)
		for _, s := range idx.WeightMap {
			if s != filepath.Base(s) || s == ".." {
				t.Fatalf("shard %q escapes the directory", s)
			}
		}
	})
}

// A GGUF or .npz file truncated under its mapping is an error on read.
func TestFormats_TruncatedWhileMapped(t *testing.T) {
	for _, name := range []string{"v3.gguf", "deflated.npz", "stored.npz"} {
		b, err := os.ReadFile(filepath.Join(formatsDir, name))
		require.NoError(t, err)
		p := filepath.Join(t.TempDir(), name)
		require.NoError(t, os.WriteFile(p, b, 0o644))
		f, err := Open(p)
		require.NoError(t, err)
		require.NoError(t, os.Truncate(p, 0))
		failed := 0
		for _, ti := range f.Tensors() {
			if ti.Length == 0 {
				continue
			}
			if _, err := f.ReadTensor(ti.Name); err != nil {
				require.Contains(t, err.Error(), p)
				failed++
			}
		}
		require.Positive(t, failed, name)
		require.NoError(t, f.Close())
	}
}
