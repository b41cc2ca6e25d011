package loader

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// Every tensor of every fixture streams to the bytes ReadTensor returns,
// read in pieces of every awkward size.
func TestTensorReader_EveryFormat(t *testing.T) {
	paths, err := filepath.Glob("testdata/formats/*.*")
	require.NoError(t, err)
	for _, p := range paths {
		if filepath.Ext(p) == ".py" || filepath.Ext(p) == ".json" {
			continue
		}
		for how, open := range openers {
			f, err := open(t, p)
			require.NoError(t, err, how, p)
			for _, ti := range f.Tensors() {
				want, err := f.ReadTensor(ti.Name)
				require.NoError(t, err)
				for _, piece := range []int{1, 3, 16, 17, 4096} {
					r, err := f.TensorReader(ti.Name)
					require.NoError(t, err)
					var got []byte
					buf := make([]byte, piece)
					for {
						k, err := iotest.HalfReader(r).Read(buf)
						got = append(got, buf[:k]...)
						if err == io.EOF {
							break
						}
						require.NoError(t, err, "%s %s", p, ti.Name)
					}
					require.Equal(t, want, append([]byte{}, got...), "%s %s", p, ti.Name)
					require.NoError(t, r.Close())
				}
				dst := make([]byte, ti.Length)
				require.NoError(t, f.ReadTensorInto(ti.Name, dst))
				require.Equal(t, want, append([]byte{}, dst...))
			}
			require.NoError(t, f.Close())
		}
	}
}

// npzWith writes an .npz holding one float32 member of n zeros (deflated),
// whose CRC is spoiled if bad.
func npzWith(t *testing.T, n int, bad bool) string {
	t.Helper()
	hdr := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }", n/4)
	for (10+len(hdr)+1)%64 != 0 {
		hdr += " "
	}
	hdr += "\n"
	npy := append([]byte("\x93NUMPY\x01\x00"), binary.LittleEndian.AppendUint16(nil, uint16(len(hdr)))...)
	npy = append(npy, hdr...)
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "x.npy", Method: zip.Deflate})
	require.NoError(t, err)
	_, err = w.Write(npy)
	require.NoError(t, err)
	chunk := make([]byte, 1<<20)
	for left := n; left > 0; left -= len(chunk) {
		_, err = w.Write(chunk[:min(left, len(chunk))])
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	b := buf.Bytes()
	if bad {
		// The CRC-32 in the central directory, which the loader reads.
		i := bytes.LastIndex(b, []byte("PK\x01\x02"))
		b[i+16] ^= 0xff
	}
	p := filepath.Join(t.TempDir(), "big.npz")
	require.NoError(t, os.WriteFile(p, b, 0o644))
	return p
}

// A member that inflates to many times the archive streams through a small
// buffer, once; a bad CRC is reported at the end of the stream.
func TestTensorReader_NPZInflatesInPieces(t *testing.T) {
	const n = 256 << 20
	p := npzWith(t, n, false)
	f, err := Open(p)
	require.NoError(t, err)
	defer f.Close()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	r, err := f.TensorReader("x")
	require.NoError(t, err)
	k, err := io.CopyBuffer(io.Discard, r, make([]byte, 1<<20))
	require.NoError(t, err)
	require.Equal(t, int64(n), k)
	runtime.ReadMemStats(&ms)
	require.Less(t, ms.TotalAlloc-before, uint64(8<<20), "allocated %d MiB to stream a %d MiB member", (ms.TotalAlloc-before)>>20, n>>20)

	bad, err := Open(npzWith(t, 4<<20, true))
	require.NoError(t, err)
	defer bad.Close()
	r, err = bad.TensorReader("x")
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, r)
	require.ErrorIs(t, err, errs.ErrInvalidModel)
	require.ErrorContains(t, err, "CRC-32")
}
