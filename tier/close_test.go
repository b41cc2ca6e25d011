package tier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
)

// countingHandler counts the records logged at Warn and above.
type countingHandler struct {
	slog.Handler
	n *atomic.Int32
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

// mappedUnder lists the lines of /proc/self/maps that map files under dir.
func mappedUnder(t *testing.T, dir string) []string {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skipf("no /proc/self/maps: %v", err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, dir) {
			out = append(out, l)
		}
	}
	return out
}

// Close while many loads are in flight and their callers give up: no panic
// (Badger used after Close panicked in a goroutine of ours), Close returns,
// nothing of the model files is mapped afterwards, calls after Close are
// ErrClosed, and the log stays quiet.
func TestCache_CloseWhileLoading(t *testing.T) {
	models := t.TempDir()
	src, err := os.ReadFile(testModel)
	require.NoError(t, err)
	var paths []string
	for i := range 48 {
		p := filepath.Join(models, fmt.Sprintf("m%02d.safetensors", i))
		require.NoError(t, os.WriteFile(p, src, 0o644))
		paths = append(paths, p)
	}
	f, err := loader.Open(testModel)
	require.NoError(t, err)
	var names []string
	for _, ti := range f.Tensors() {
		names = append(names, ti.Name)
	}
	f.Close()

	for round := range 8 {
		var warnings atomic.Int32
		logger := slog.New(countingHandler{slog.NewTextHandler(io.Discard, nil), &warnings})
		c, err := Open(&Options{Dir: t.TempDir(), MemoryBytes: 64 << 10, Logger: logger})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var started atomic.Int32
		for g := range 48 {
			wg.Go(func() {
				for i := 0; ; i++ {
					p := paths[(g+i+round)%len(paths)]
					_, err := c.Tensor(ctx, p, names[(g*7+i)%len(names)])
					started.Add(1)
					switch {
					case err == nil:
					case errors.Is(err, context.Canceled), errors.Is(err, errs.ErrClosed):
						return
					default:
						t.Errorf("round %d: %v", round, err)
						return
					}
				}
			})
		}
		for started.Load() < int32(200+round*100) {
			runtime.Gosched()
		}
		// Callers that gave up, or readers still running, as Close begins.
		if round%2 == 0 {
			cancel()
		}
		require.NoError(t, c.Close())
		cancel()
		require.Empty(t, mappedUnder(t, models), "model files still mapped after Close")
		wg.Wait()
		require.Empty(t, mappedUnder(t, models), "model files mapped after Close returned")
		t.Logf("round %d: %d reads begun, %d warnings", round, started.Load(), warnings.Load())
		_, err = c.Tensor(context.Background(), paths[0], names[0])
		require.ErrorIs(t, err, errs.ErrClosed)
		_, err = c.Warm(context.Background(), paths[0])
		require.ErrorIs(t, err, errs.ErrClosed)
		require.LessOrEqual(t, warnings.Load(), int32(2), "round %d: warnings after Close", round)
	}
}
