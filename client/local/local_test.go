package local

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

const testModel = "../../testdata/models/posenet.bf16.safetensors"

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// daemon serves a cache on a unix socket in this process, as warm serve
// does, and returns the socket.
func daemon(t *testing.T) string {
	t.Helper()
	c, err := tier.Open(&tier.Options{Dir: t.TempDir(), Logger: quiet()})
	require.NoError(t, err)
	socket := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", socket)
	require.NoError(t, err)
	h := server.New(c, &server.Options{Roots: []string{"/"}})
	srv := server.Server(h)
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		c.Close()
	})
	return socket
}

func fileBytes(t *testing.T, name string) []byte {
	t.Helper()
	f, err := loader.Open(testModel)
	require.NoError(t, err)
	defer f.Close()
	b, err := f.ReadTensor(name)
	require.NoError(t, err)
	return b
}

func abs(t *testing.T) string {
	p, err := filepath.Abs(testModel)
	require.NoError(t, err)
	return p
}

// The same program runs against the cache in process or the daemon,
// chosen by MODELCACHE_SERVER, and sees the same answers.
func TestReader_InProcessOrDaemon(t *testing.T) {
	socket := daemon(t)
	ctx := context.Background()
	use := func(r client.Reader) []string {
		defer r.Close()
		m, err := r.Model(ctx, abs(t))
		require.NoError(t, err)
		require.Len(t, m.Tensors, 62)
		var served []string
		for range 2 {
			tn, err := r.Tensor(ctx, abs(t), "Const_61")
			require.NoError(t, err)
			require.Equal(t, fileBytes(t, "Const_61"), tn.Data)
			served = append(served, tn.ServedBy)
		}
		n := 0
		require.NoError(t, r.Load(ctx, abs(t), 2, func(*client.Tensor) error { n++; return nil }))
		require.Equal(t, 62, n)
		require.NoError(t, r.Put(ctx, "ns", "k", []byte("v"), &client.PutOptions{DType: "U8", Shape: []uint64{1}}))
		v, err := r.Get(ctx, "ns", "k")
		require.NoError(t, err)
		require.Equal(t, "v", string(v.Data))
		require.Equal(t, "U8", v.DType)
		require.Equal(t, []uint64{1}, v.Shape)
		require.NoError(t, r.DropNamespace(ctx, "ns"))
		_, err = r.Get(ctx, "ns", "k")
		require.ErrorIs(t, err, errs.ErrNotFound)
		s, err := r.Stats(ctx)
		require.NoError(t, err)
		require.Positive(t, s.Tensors.Requests)
		require.NotEmpty(t, s.L2.Dir)
		require.Positive(t, s.Lifetime.Requests)
		return served
	}
	t.Setenv("MODELCACHE_SERVER", "")
	r, err := Open(&tier.Options{Dir: t.TempDir(), Logger: quiet()})
	require.NoError(t, err)
	require.Equal(t, []string{"source", "l1"}, use(r))
	t.Setenv("MODELCACHE_SERVER", socket)
	r, err = Open(nil)
	require.NoError(t, err)
	require.IsType(t, &client.Client{}, r)
	require.Equal(t, []string{"source", "l1"}, use(r))
}

// New serves a cache the caller keeps: its Close leaves the cache open.
func TestNew_LeavesTheCacheOpen(t *testing.T) {
	c, err := tier.Open(&tier.Options{Logger: quiet()})
	require.NoError(t, err)
	defer c.Close()
	r := New(c)
	require.NoError(t, r.Close())
	_, err = c.Tensor(context.Background(), abs(t), "Const_61")
	require.NoError(t, err)
}
