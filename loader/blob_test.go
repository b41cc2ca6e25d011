package loader

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/testmodels"
)

// memBlob is a Blob in memory that counts the bytes read from it and may
// fail every read: what an object store or an HTTP origin would be to the
// loader.
type memBlob struct {
	b     []byte
	id    Identity
	read  *atomic.Int64
	fail  error
	close *atomic.Int32
}

func newMemBlob(path string, b []byte) *memBlob {
	return &memBlob{b: b, id: Identity{Path: path, Size: int64(len(b)), ModTime: 1}, read: new(atomic.Int64), close: new(atomic.Int32)}
}

func (m *memBlob) ReadAt(p []byte, off int64) (int, error) {
	if m.fail != nil {
		return 0, m.fail
	}
	if off < 0 || off > int64(len(m.b)) {
		return 0, fmt.Errorf("memBlob: offset %d of %d", off, len(m.b))
	}
	n := copy(p, m.b[off:])
	m.read.Add(int64(n))
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memBlob) Identity() Identity { return m.id }
func (m *memBlob) Close() error       { m.close.Add(1); return nil }

// opener opens a model file by path: from disk, or from its bytes in memory.
type opener func(t *testing.T, path string) (*File, error)

// openers are the two ways a file reaches the loader: Open (mapped, pread)
// and OpenBlob over bytes in memory (ReadAt only).
var openers = map[string]opener{
	"local": func(t *testing.T, path string) (*File, error) { return Open(path) },
	"blob": func(t *testing.T, path string) (*File, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return OpenBlob(newMemBlob(path, b), "")
	},
}

// openShardedMem opens the sharded checkpoint in dir from memory.
func openShardedMem(t *testing.T, dir string) (*Sharded, error) {
	mem := func(p string) (Blob, error) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		return newMemBlob(p, b), nil
	}
	idx, err := mem(filepath.Join(dir, ShardIndexName))
	require.NoError(t, err)
	return openSharded(idx, mem)
}

// Every fixture parses from a Blob in memory exactly as from its file: the
// same tensors, the same bytes, whole and in pieces.
func TestOpenBlob_EveryFormatAsFromTheFile(t *testing.T) {
	want := loadExpected(t)
	for file, tensors := range want {
		t.Run(file, func(t *testing.T) {
			p := filepath.Join(formatsDir, file)
			var src Source
			var err error
			if file == "sharded" {
				src, err = openShardedMem(t, p)
			} else {
				src, err = openers["blob"](t, p)
			}
			require.NoError(t, err)
			defer src.Close()
			require.Len(t, src.Tensors(), len(tensors))
			for name, w := range tensors {
				b, err := src.ReadTensor(name)
				require.NoError(t, err, name)
				require.Equal(t, w.Hex, hex.EncodeToString(b), name)
			}
		})
	}
}

// ReadTensorAt reads any piece of every tensor of every format, from the
// file and from memory: stored as is, byte-swapped, transposed, inflated.
func TestReadTensorAt_EveryFormat(t *testing.T) {
	paths, err := filepath.Glob(formatsDir + "/*.*")
	require.NoError(t, err)
	for how, open := range openers {
		for _, p := range paths {
			if filepath.Ext(p) == ".py" || filepath.Ext(p) == ".json" {
				continue
			}
			f, err := open(t, p)
			require.NoError(t, err, p)
			rng := rand.New(rand.NewPCG(1, 2))
			for _, ti := range f.Tensors() {
				whole, err := f.ReadTensor(ti.Name)
				require.NoError(t, err)
				for range 20 {
					off := rng.Uint64N(ti.Length + 1)
					n := rng.Uint64N(ti.Length - off + 1)
					got := make([]byte, n)
					require.NoError(t, f.ReadTensorAt(ti.Name, got, off), "%s %s %s", how, p, ti.Name)
					require.Equal(t, whole[off:off+n], got, "%s %s %s [%d, +%d)", how, p, ti.Name, off, n)
				}
				err = f.ReadTensorAt(ti.Name, make([]byte, 1), ti.Length)
				require.ErrorIs(t, err, io.ErrUnexpectedEOF)
			}
			require.NoError(t, f.Close())
			err = f.ReadTensorAt(f.Tensors()[0].Name, nil, 0)
			require.ErrorIs(t, err, errs.ErrClosed, "%s %s", how, p)
		}
	}
}

// Opening a Blob reads its header, not its tensors; reading a piece of a
// tensor reads that piece.
func TestOpenBlob_ReadsWhatItNeeds(t *testing.T) {
	data := make([]byte, 8<<20)
	head := `{"a":{"dtype":"U8","shape":[8388608],"data_offsets":[0,8388608]}}`
	file := testmodels.Build(head, data)
	gguf := ggufHead(3, 1, 1).str("k").u32(8).str(strings.Repeat("v", 100<<10)).tensor("t", 0, 0, 1<<20)
	for gguf.Len()%32 != 0 {
		gguf.WriteByte(0)
	}
	ggufLen := gguf.Len()
	gguf.Write(make([]byte, 4<<20))
	for name, tc := range map[string]struct {
		b      []byte
		tensor string
		header int // bytes an open may read: the first 64 KiB, or the header and at most as much again
	}{
		"safetensors": {file, "a", headRead},
		"gguf":        {gguf.Bytes(), "t", 2 * ggufLen},
		"npy":         {npyFile(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576,), }\n", make([]byte, 4<<20)), "x", headRead},
	} {
		t.Run(name, func(t *testing.T) {
			m := newMemBlob("/mem/x."+name, tc.b)
			f, err := OpenBlob(m, "")
			require.NoError(t, err)
			require.LessOrEqual(t, m.read.Load(), int64(tc.header))
			before := m.read.Load()
			p := make([]byte, 3)
			require.NoError(t, f.ReadTensorAt(tc.tensor, p, 1000))
			require.EqualValues(t, 3, m.read.Load()-before)
			require.NoError(t, f.Close())
			require.EqualValues(t, 1, m.close.Load(), "the File closes its Blob")
		})
	}
}

// A Blob that cannot be read is an error of the read, naming the file, not
// an invalid model; a failed open closes the Blob.
func TestOpenBlob_ReadFailures(t *testing.T) {
	down := errors.New("connection reset")
	for _, name := range []string{"v3.gguf", "f4_c.npy", "stored.npz", "deflated.npz"} {
		b, err := os.ReadFile(filepath.Join(formatsDir, name))
		require.NoError(t, err)
		m := newMemBlob("/mem/"+name, b)
		m.fail = down
		_, err = OpenBlob(m, "")
		require.ErrorIs(t, err, down, name)
		require.NotErrorIs(t, err, errs.ErrInvalidModel, name)
		require.ErrorContains(t, err, "/mem/"+name)
		require.EqualValues(t, 1, m.close.Load())
	}
	m := newMemBlob("/mem/m.safetensors", testmodels.Build(testmodels.OKHead, make([]byte, 8)))
	f, err := OpenBlob(m, "")
	require.NoError(t, err)
	m.fail = down
	_, err = f.ReadTensor(f.Tensors()[0].Name)
	require.ErrorIs(t, err, down)
	require.ErrorContains(t, err, "/mem/m.safetensors")
	require.ErrorIs(t, f.ReadTensorAt(f.Tensors()[0].Name, make([]byte, 1), 0), down)
	_, err = ReadShardIndexBlob(m)
	require.ErrorIs(t, err, down)
	_, err = DigestBlob(m)
	require.ErrorIs(t, err, down)
}

// Every malformed file is refused from a Blob as from a file, naming it.
func TestOpenBlob_RefusesMalformed(t *testing.T) {
	for name, tc := range testmodels.Malformed() {
		m := newMemBlob("/mem/m.safetensors", tc.File)
		f, err := OpenBlob(m, "")
		require.Nil(t, f, name)
		require.ErrorIs(t, err, errs.ErrInvalidModel, name)
		require.ErrorContains(t, err, "/mem/m.safetensors", name)
		require.ErrorContains(t, err, tc.Want, name)
	}
}

// The shard index and the digest read from a Blob as from a file.
func TestShardIndexAndDigest_FromBlob(t *testing.T) {
	p := filepath.Join(formatsDir, "sharded", ShardIndexName)
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	fromFile, err := readShardIndex(p)
	require.NoError(t, err)
	fromBlob, err := ReadShardIndexBlob(newMemBlob(p, b))
	require.NoError(t, err)
	require.Equal(t, fromFile, fromBlob)
	_, err = ReadShardIndexBlob(newMemBlob("/mem/i.json", []byte(`{"weight_map": {"a": "../x"}}`)))
	require.ErrorIs(t, err, errs.ErrInvalidModel)
	require.ErrorContains(t, err, "/mem/i.json")

	d, _, err := digestFile(p)
	require.NoError(t, err)
	db, err := DigestBlob(newMemBlob(p, b))
	require.NoError(t, err)
	require.Equal(t, d, db)
	short := newMemBlob(p, b)
	short.id.Size++ // the source holds less than its identity says
	_, err = DigestBlob(short)
	require.ErrorContains(t, err, "changed")
}

// blobSeeds and checkBlob are what the fuzz targets add to check the entry
// point of every format: parsing from a Blob (reads, not a mapping) agrees
// with parsing the bytes mapped, and reading the tensors so parsed is safe.
func checkBlob(t *testing.T, b []byte, format Format) {
	mapped := &File{id: Identity{Path: "/mem/x", Size: int64(len(b))}, format: format, src: newMemBlob("/mem/x", b)}
	errMapped := mapped.parse(&fileBytes{size: uint64(len(b)), mapped: b})
	m := newMemBlob("/mem/x", b)
	f, err := OpenBlob(m, format)
	if (err == nil) != (errMapped == nil) {
		t.Fatalf("mapped: %v, from a Blob: %v", errMapped, err)
	}
	if err != nil {
		if !errors.Is(err, errs.ErrInvalidModel) && !errors.Is(err, errs.ErrUnsupported) {
			t.Fatalf("not an invalid model: %v", err)
		}
		return
	}
	defer f.Close()
	if len(f.tensors) != len(mapped.tensors) {
		t.Fatalf("%d tensors from a Blob, %d mapped", len(f.tensors), len(mapped.tensors))
	}
	for i, ti := range f.tensors {
		if ti.Name != mapped.tensors[i].Name || ti.Offset != mapped.tensors[i].Offset || ti.Length != mapped.tensors[i].Length {
			t.Fatalf("tensor %d: %+v from a Blob, %+v mapped", i, ti, mapped.tensors[i])
		}
		if ti.Length > 1<<20 {
			continue
		}
		whole, err := f.ReadTensor(ti.Name)
		if err != nil {
			continue // a bad CRC or DEFLATE stream
		}
		if uint64(len(whole)) != ti.Length {
			t.Fatalf("tensor %q: %d bytes, %d declared", ti.Name, len(whole), ti.Length)
		}
		if ti.Length > 0 {
			p := make([]byte, 1)
			if err := f.ReadTensorAt(ti.Name, p, ti.Length-1); err != nil || p[0] != whole[ti.Length-1] {
				t.Fatalf("tensor %q: last byte %v, %v", ti.Name, p, err)
			}
		}
	}
}

func TestCheckBlob_Fixtures(t *testing.T) {
	paths, err := filepath.Glob(formatsDir + "/*.*")
	require.NoError(t, err)
	for _, p := range paths {
		b, err := os.ReadFile(p)
		require.NoError(t, err)
		checkBlob(t, b, formatOf(p, b))
		checkBlob(t, b[:len(b)/2], formatOf(p, b))
	}
	checkBlob(t, testmodels.Build(testmodels.OKHead, make([]byte, 8)), Safetensors)
	checkBlob(t, bytes.Repeat([]byte{0}, 7), Safetensors)
}
