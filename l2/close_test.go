package l2

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// Close while every kind of call is in progress: each returns its result
// or ErrClosed, never a panic (Badger panics when used after its Close, in
// the middle of an iteration too), and Close waits for them.
func TestStore_CloseWhileInUse(t *testing.T) {
	for round := range 4 {
		dir := t.TempDir()
		s, err := Open(&Options{Dir: dir, ChunkSize: 4096, Logger: discardLogger()})
		require.NoError(t, err)
		for i := range 3000 {
			require.NoError(t, s.Put(fmt.Sprint(i), "U8", nil, []byte(fmt.Sprint(i))))
		}
		ops := []func(i int) error{
			func(i int) error { return s.Range("", func(*EntryInfo) bool { return true }) },
			func(i int) error { _, _, err := s.Verify(nil); return err },
			func(i int) error { _, err := s.Get(fmt.Sprint(i % 3000)); return err },
			func(i int) error { return s.Put(fmt.Sprint(i%3000), "U8", nil, []byte("x")) },
			func(i int) error { _, err := s.Stat(fmt.Sprint(i % 3000)); return err },
			func(i int) error { _, err := s.Records().Counts(); return err },
			func(i int) error { return s.Records().Add(map[string]uint64{"n": 1}) },
			func(i int) error { _, err := s.Records().Get(""); return err },
			func(i int) error { return s.Records().Set("a", []byte("b")) },
			func(i int) error { return s.Delete(fmt.Sprint(i % 3000)) },
			func(i int) error { return s.GC() },
		}
		var wg sync.WaitGroup
		var began atomic.Int32
		for k, op := range ops {
			wg.Go(func() {
				for i := 0; ; i++ {
					began.Add(1)
					err := op(i + round)
					switch {
					case err == nil, errors.Is(err, errs.ErrNotFound):
					case errors.Is(err, errs.ErrClosed):
						return
					default:
						t.Errorf("op %d: %v", k, err)
						return
					}
				}
			})
		}
		for began.Load() < int32(len(ops)*(2+round)) {
			runtime.Gosched()
		}
		require.NoError(t, s.Close())
		wg.Wait()
	}
}
