//go:build linux

package client

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/modelcache/modelcache/internal/benchutil"
	"github.com/modelcache/modelcache/internal/testmodels"
	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

// touch reads every 8-byte word, as a consumer of the bytes would (a copy
// to a device, a checksum): handing out a slice alone costs nothing.
func touch(b []byte) (x uint64) {
	for i := 0; i+8 <= len(b); i += 8 {
		x ^= binary.LittleEndian.Uint64(b[i:])
	}
	return x
}

// A 512 MiB model held in L1: read in process, through shared memory from
// a daemon, and through HTTP on its unix socket; every byte read once.
//
//	go test -run '^$' -bench 'DaemonLoad' -benchtime 5x ./client
func BenchmarkDaemonLoad(b *testing.B) {
	const size = 512 << 20
	path := filepath.Join(b.TempDir(), "m.safetensors")
	if err := testmodels.WriteSyntheticBF16(path, size, 1); err != nil {
		b.Fatal(err)
	}
	cache, c := benchDaemon(b, 3<<30, 2<<30)
	ctx := context.Background()
	m, err := cache.Model(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	var sink uint64
	inProcess := func() error {
		_, err := m.Load(ctx, nil, func(t *tier.Tensor) error { sink ^= touch(t.Bytes()); return nil })
		return err
	}
	mapped := func() error {
		return c.LoadMapped(ctx, path, 4, func(mp *Mapped) error { sink ^= touch(mp.Bytes()); return mp.Close() })
	}
	mappedModel := func() error {
		mm, err := c.MapModel(ctx, path)
		if err != nil {
			return err
		}
		for _, t := range mm.Tensors {
			b, _ := mm.Tensor(t.Name)
			sink ^= touch(b)
		}
		return mm.Close()
	}
	// A process that keeps the mapping: what reading it costs once mapped.
	kept, err := c.MapModel(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	defer kept.Close()
	keptModel := func() error {
		for _, t := range kept.Tensors {
			b, _ := kept.Tensor(t.Name)
			sink ^= touch(b)
		}
		return nil
	}
	overHTTP := func() error {
		return c.Load(ctx, path, 4, func(t *Tensor) error { sink ^= touch(t.Data); return nil })
	}
	// Fill L1 and the daemon's shared memory first.
	for _, f := range []func() error{inProcess, mapped, mappedModel} {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		f    func() error
	}{{"in-process", inProcess}, {"shared-memory-model", mappedModel}, {"shared-memory-kept", keptModel}, {"shared-memory-tensors", mapped}, {"http", overHTTP}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(m.Bytes()))
			for range b.N {
				if err := bc.f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	_ = sink
}

// An L1 hit of one small tensor: in process, and through the daemon (shared
// memory and HTTP); p50 and p99 of each.
//
//	go test -run '^$' -bench 'DaemonHit' ./client
func BenchmarkDaemonHit(b *testing.B) {
	cache, c := benchDaemon(b, 0, 0)
	ctx := context.Background()
	model, _ := filepath.Abs(testModel)
	run := func(b *testing.B, f func() error) { benchutil.Latency(b, 1, f) }
	b.Run("in-process", func(b *testing.B) {
		run(b, func() error { _, err := cache.Tensor(ctx, model, "Const_61"); return err })
	})
	b.Run("shared-memory", func(b *testing.B) {
		run(b, func() error {
			mp, err := c.MapTensor(ctx, model, "Const_61")
			if err == nil {
				err = mp.Close()
			}
			return err
		})
	})
	b.Run("http", func(b *testing.B) {
		run(b, func() error { _, err := c.Tensor(ctx, model, "Const_61"); return err })
	})
}

// benchDaemon serves a cache with an L1 of mem bytes (0: the default) on a
// unix socket in this process, and dials it.
func benchDaemon(b *testing.B, mem, shm int64) (*tier.Cache, *Client) {
	b.Helper()
	cache, err := tier.Open(&tier.Options{MemoryBytes: mem, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	socket := filepath.Join(b.TempDir(), "s.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		b.Fatal(err)
	}
	h := server.New(cache, &server.Options{ShmBytes: shm, Roots: []string{"/"}})
	srv := server.Server(h)
	go srv.Serve(l)
	b.Cleanup(func() {
		srv.Close()
		h.Close()
		cache.Close()
	})
	c, err := Dial(socket)
	if err != nil {
		b.Fatal(err)
	}
	return cache, c
}
