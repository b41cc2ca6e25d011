//go:build unix

package loader

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// A FIFO is refused before it is opened for reading, which would wait for
// a writer forever; so are devices and directories.
func TestOpen_RefusesNonRegularFiles(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "f.safetensors")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))
	calls := map[string]func(string) error{
		"Open":           func(p string) error { _, err := Open(p); return err },
		"OpenSource":     func(p string) error { _, err := OpenSource(p); return err },
		"DigestFile":     func(p string) error { _, _, err := digestFile(p); return err },
		"ReadShardIndex": func(p string) error { _, err := readShardIndex(p); return err },
	}
	for name, call := range calls {
		for _, p := range []string{fifo, "/dev/zero", t.TempDir()} {
			done := make(chan error, 1)
			go func() { done <- call(p) }()
			select {
			case err := <-done:
				require.ErrorIs(t, err, errs.ErrInvalidModel, "%s(%s)", name, p)
				require.ErrorContains(t, err, p)
				require.ErrorContains(t, err, "not a regular file")
			case <-time.After(10 * time.Second):
				t.Fatalf("%s(%s) blocked", name, p)
			}
		}
	}
}
