package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/internal/benchutil"
	"github.com/modelcache/modelcache/tier"
)

// An L1 hit of a small tensor: in this process, and from a warm serve
// daemon in another process, through HTTP and through shared memory; p50
// and p99 of each.
//
//	go test -run '^$' -bench 'ServeHit' ./cmd/warm
func BenchmarkServeHit(b *testing.B) {
	model, _ := filepath.Abs("../../testdata/models/posenet.bf16.safetensors")
	ctx := context.Background()
	socket := filepath.Join(b.TempDir(), "mc.sock")
	startServe(b, b.TempDir(), socket)
	c, err := client.Dial(socket)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	cache, err := tier.Open(&tier.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	run := func(b *testing.B, f func() error) { benchutil.Latency(b, 100, f) }
	b.Run("in-process", func(b *testing.B) {
		run(b, func() error { _, err := cache.Tensor(ctx, model, "Const_61"); return err })
	})
	b.Run("daemon-http", func(b *testing.B) {
		run(b, func() error { _, err := c.Tensor(ctx, model, "Const_61"); return err })
	})
	b.Run("daemon-shared-memory", func(b *testing.B) {
		run(b, func() error {
			m, err := c.MapTensor(ctx, model, "Const_61")
			if err == nil {
				err = m.Close()
			}
			return err
		})
	})
}
