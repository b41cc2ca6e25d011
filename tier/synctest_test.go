package tier

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
)

// gatedOrigin is the local file system with every tensor read held until
// the test opens the gate: inside a synctest bubble, a read waiting at the
// gate is durably blocked, so synctest.Wait tells when every reader has got
// as far as it can.
type gatedOrigin struct {
	LocalFiles
	gate  chan struct{}
	reads atomic.Int32 // reads that reached the gate
}

func (o *gatedOrigin) Open(path string) (ModelFile, error) {
	f, err := o.LocalFiles.Open(path)
	if err != nil {
		return nil, err
	}
	return &gatedFile{ModelFile: f, o: o}, nil
}

type gatedFile struct {
	ModelFile
	o *gatedOrigin
}

func (f *gatedFile) ReadTensorInto(name string, dst []byte) error {
	f.o.reads.Add(1)
	<-f.o.gate
	return f.ModelFile.ReadTensorInto(name, dst)
}

// Sixteen readers of one missing tensor: exactly one reads the file, the
// others wait for it and share its bytes; none of this depends on how the
// goroutines happen to be scheduled.
func TestCache_SingleflightIsDeterministic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &gatedOrigin{gate: make(chan struct{})}
		c, err := Open(&Options{Origin: o, Logger: nilLogger()})
		require.NoError(t, err)
		defer c.Close()
		want := fileBytes(t, testModel, "Const_59")
		var wg sync.WaitGroup
		got := make([]*Tensor, 16)
		for i := range got {
			wg.Go(func() {
				tn, err := c.Tensor(context.Background(), testModel, "Const_59")
				require.NoError(t, err)
				got[i] = tn
			})
		}
		synctest.Wait()
		require.Equal(t, int32(1), o.reads.Load(), "one read reached the file; the rest wait for it")
		close(o.gate)
		wg.Wait()
		served := map[Tier]int{}
		for _, tn := range got {
			served[tn.ServedBy]++
			require.Equal(t, want, tn.Bytes())
		}
		require.Equal(t, map[Tier]int{Source: 1, Shared: 15}, served)
		s := c.Stats()
		require.Equal(t, uint64(1), s.SourceLoads)
		require.Equal(t, uint64(15), s.SharedLoads)
	})
}

// A caller that gives up returns at once; the load it started finishes for
// the next caller, who finds the tensor in RAM.
func TestCache_CancelledCallerLeavesTheLoadRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &gatedOrigin{gate: make(chan struct{})}
		c, err := Open(&Options{Origin: o, Logger: nilLogger()})
		require.NoError(t, err)
		defer c.Close()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			_, err := c.Tensor(ctx, testModel, "Const_1")
			done <- err
		}()
		synctest.Wait()
		require.Equal(t, int32(1), o.reads.Load())
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		close(o.gate)
		synctest.Wait() // the load finishes and promotes
		tn, err := c.Tensor(context.Background(), testModel, "Const_1")
		require.NoError(t, err)
		require.Equal(t, L1, tn.ServedBy)
		require.Equal(t, int32(1), o.reads.Load(), "the file was read once")
	})
}

// A tensor queued for L2 is readable from the queue until its write is
// done, and the queue is empty after.
func TestWriteBehind_QueuedWritesAreReadable(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var puts atomic.Int32
		p := putterFunc(func(string, string, []uint64, []byte) error { <-release; puts.Add(1); return nil })
		w := newWriteBehind("l2", p, 1<<20, newRateLimitedLog(nilLogger(), warnInterval))
		require.True(t, w.enqueue("a", "U8", nil, []byte("abc")))
		require.True(t, w.enqueue("a", "U8", nil, []byte("abc")), "already on its way")
		synctest.Wait() // a worker holds "a" in Put
		j, ok := w.pending("a")
		require.True(t, ok)
		require.Equal(t, []byte("abc"), j.data)
		close(release)
		w.flush()
		_, ok = w.pending("a")
		require.False(t, ok)
		require.Equal(t, int32(1), puts.Load(), "written once")
		w.close()
	})
}

// Close while a load waits on the file: Close cancels it, waits its bound
// and closes; the load returns ErrClosed once its reads end, never a panic,
// and nothing is written to the caller's buffers after it returns.
func TestModel_CloseDuringLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := &gatedOrigin{gate: make(chan struct{})}
		c, err := Open(&Options{Origin: o, Logger: nilLogger()})
		require.NoError(t, err)
		ctx := context.Background()
		m, err := c.Model(ctx, testModel)
		require.NoError(t, err)
		var returned atomic.Bool
		done := make(chan error)
		go func() {
			_, err := m.Load(ctx, &LoadOptions{Into: func(ti *TensorInfo) ([]byte, error) {
				require.False(t, returned.Load(), "Into after Load returned")
				return make([]byte, ti.Bytes), nil
			}}, func(*Tensor) error { return nil })
			returned.Store(true)
			done <- err
		}()
		synctest.Wait() // the load's reads wait at the gate
		require.Positive(t, o.reads.Load())
		// Close cancels the load, which cannot return while reads into the
		// caller's buffers run: Close waits its bound (10 s, here on the
		// bubble's clock) and closes the tiers and files under them.
		require.NoError(t, c.Close())
		select {
		case err := <-done:
			t.Fatalf("Load returned (%v) with its reads still running", err)
		default:
		}
		close(o.gate) // the held reads go on, into closed files
		require.ErrorIs(t, <-done, errs.ErrClosed)
		require.NoError(t, m.Close())
	})
}
