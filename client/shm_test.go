//go:build linux

package client

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

func TestClient_MapTensor(t *testing.T) {
	socket, _ := daemon(t, "")
	c, err := Dial(socket)
	require.NoError(t, err)
	ctx := context.Background()
	m, err := c.MapTensor(ctx, abs(t), "Const_61")
	require.NoError(t, err)
	require.Equal(t, fileBytes(t, "Const_61"), m.Bytes())
	require.Equal(t, "BF16", m.DType)
	require.Equal(t, []uint64{1, 1, 384, 32}, m.Shape)
	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "twice is fine")

	_, err = c.MapTensor(ctx, abs(t), "absent")
	require.ErrorIs(t, err, errs.ErrNotFound)
	_, err = c.MapTensor(ctx, "", "x")
	require.ErrorIs(t, err, errs.ErrInvalidArgument)

	// Many at once, every byte right.
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			m, err := c.MapTensor(ctx, abs(t), "Const_59")
			if !assertNoErr(t, err) {
				return
			}
			defer m.Close()
			if string(m.Bytes()) != string(fileBytes(t, "Const_59")) {
				t.Error("wrong bytes")
			}
		})
	}
	wg.Wait()
}

func assertNoErr(t *testing.T, err error) bool {
	if err != nil {
		t.Error(err)
		return false
	}
	return true
}

// A mapping outlives the daemon's copy: evicted from its small budget, the
// handler closed, the cache closed, the bytes stay.
func TestClient_MappingOutlivesTheDaemon(t *testing.T) {
	cache, err := tier.Open(&tier.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	socket := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", socket)
	require.NoError(t, err)
	h := server.New(cache, &server.Options{ShmBytes: 1, Roots: []string{"/"}}) // keeps one tensor at most
	srv := server.Server(h)
	go srv.Serve(l)
	c, err := Dial(socket)
	require.NoError(t, err)
	ctx := context.Background()
	var maps []*Mapped
	for _, name := range []string{"Const_61", "Const_59", "Const_57"} {
		m, err := c.MapTensor(ctx, abs(t), name)
		require.NoError(t, err)
		maps = append(maps, m)
	}
	srv.Close()
	h.Close()
	require.NoError(t, cache.Close())
	for i, name := range []string{"Const_61", "Const_59", "Const_57"} {
		require.Equal(t, fileBytes(t, name), maps[i].Bytes(), name)
		require.NoError(t, maps[i].Close())
	}
}

// What the daemon hands out is sealed: no process can write to it.
func TestShm_SealedReadOnly(t *testing.T) {
	socket, _ := daemon(t, "")
	c, err := Dial(socket)
	require.NoError(t, err)
	m, err := c.MapTensor(context.Background(), abs(t), "Const_61")
	require.NoError(t, err)
	defer m.Close()
	// The mapping is read-only: asking to make it writable fails, as the
	// memfd is sealed against writes.
	require.Error(t, unix.Mprotect(m.Bytes(), unix.PROT_READ|unix.PROT_WRITE))
}

func TestClient_MapModel(t *testing.T) {
	socket, _ := daemon(t, "")
	c, err := Dial(socket)
	require.NoError(t, err)
	ctx := context.Background()
	for range 2 { // made once, then handed out again
		m, err := c.MapModel(ctx, abs(t))
		require.NoError(t, err)
		require.Len(t, m.Tensors, 62)
		for _, tn := range m.Tensors {
			b, ok := m.Tensor(tn.Name)
			require.True(t, ok)
			require.Equal(t, fileBytes(t, tn.Name), b, tn.Name)
		}
		require.NoError(t, m.Close())
	}
	_, err = c.MapModel(ctx, "/no/such/model.safetensors")
	require.ErrorIs(t, err, fs.ErrNotExist)
}
