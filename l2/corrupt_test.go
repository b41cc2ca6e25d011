package l2

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const corruptEntries = 24

// corruptData: small entries live in the LSM tree, large ones (≥ 64 KiB
// chunks) in the value log, so damage to either kind of file is exercised.
func corruptData(i int) []byte {
	n := []int{100, 20_000, 200_000, 700_000}[i%4]
	r := rand.New(rand.NewPCG(uint64(i), 5))
	b := make([]byte, n)
	for j := range b {
		b[j] = byte(r.IntN(16))
	}
	return b
}

// TestHelperCorruptReader is not a test: TestStore_DamagedFiles runs it in a
// child process, so that a panic anywhere (Badger's goroutines included)
// fails the parent instead of killing the suite. It reports per key whether
// the read was right, an error, or WRONG.
func TestHelperCorruptReader(t *testing.T) {
	dir := os.Getenv("L2_CORRUPT_DIR")
	if dir == "" {
		t.Skip("helper process only")
	}
	s, err := Open(&Options{Dir: dir, ChunkSize: 128 << 10, Logger: discardLogger()})
	if err != nil {
		fmt.Printf("openerr %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return
	}
	check := func(pass string) {
		for i := range corruptEntries {
			v, err := s.Get(fmt.Sprint(i))
			switch {
			case err != nil:
				fmt.Printf("%s err %d %s\n", pass, i, strings.ReplaceAll(err.Error(), "\n", " "))
			case !bytes.Equal(v.Data, corruptData(i)):
				fmt.Printf("%s WRONG %d\n", pass, i)
			default:
				fmt.Printf("%s ok %d\n", pass, i)
			}
		}
	}
	check("read")
	checked, bad, err := s.Verify(nil)
	fmt.Printf("verify %d %d %v\n", checked, bad, err)
	check("reread")
	if err := s.Close(); err != nil {
		fmt.Printf("closeerr %v\n", err)
	}
}

func copyDir(t *testing.T, src, dst string) {
	entries, err := os.ReadDir(src)
	require.NoError(t, err)
	for _, e := range entries {
		in, err := os.Open(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		out, err := os.Create(filepath.Join(dst, e.Name()))
		require.NoError(t, err)
		_, err = io.Copy(out, in)
		require.NoError(t, err)
		in.Close()
		require.NoError(t, out.Close())
	}
}

// Flipped or truncated bytes in any file of the directory: the store either
// refuses to open with an error naming the directory, or every read returns
// the right bytes or an error — never wrong bytes, never a crash.
func TestStore_DamagedFiles(t *testing.T) {
	golden := t.TempDir()
	s := openStore(t, golden, func(o *Options) { o.ChunkSize = 128 << 10 })
	for i := range corruptEntries {
		require.NoError(t, s.Put(fmt.Sprint(i), "U8", nil, corruptData(i)))
	}
	require.NoError(t, s.Close())
	files, err := os.ReadDir(golden)
	require.NoError(t, err)

	for _, f := range files {
		if f.Name() == lockName {
			continue
		}
		for _, mode := range []string{"flip", "truncate"} {
			t.Run(f.Name()+"/"+mode, func(t *testing.T) {
				dir := t.TempDir()
				copyDir(t, golden, dir)
				p := filepath.Join(dir, f.Name())
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				switch mode {
				case "flip":
					r := rand.New(rand.NewPCG(uint64(len(b)), 9))
					for range 16 {
						if len(b) > 0 {
							b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
						}
					}
				case "truncate":
					b = b[:len(b)/2]
				}
				require.NoError(t, os.WriteFile(p, b, 0o644))

				cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCorruptReader$")
				cmd.Env = append(os.Environ(), "L2_CORRUPT_DIR="+dir)
				out, err := cmd.CombinedOutput()
				require.NoError(t, err, "the reader crashed:\n%s", out)
				text := string(out)
				require.NotContains(t, text, "WRONG", "wrong bytes were returned:\n%s", text)
				if strings.Contains(text, "openerr") {
					require.Contains(t, text, dir, "the open error names the directory")
					return
				}
				// After Verify dropped what was damaged, whatever is left
				// reads back whole.
				require.Contains(t, text, "verify ")
				for _, line := range strings.Split(text, "\n") {
					if strings.HasPrefix(line, "reread err") {
						require.Contains(t, line, "not found", "after Verify, reads are right or misses")
					}
				}
				require.NotContains(t, text, "closeerr", "%s", text)
			})
		}
	}
}
