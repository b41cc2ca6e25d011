package main

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/modelcache/modelcache/client"
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
	run := func(b *testing.B, f func() error) {
		for range 100 { // warm: L1, connections
			if err := f(); err != nil {
				b.Fatal(err)
			}
		}
		times := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if err := f(); err != nil {
				b.Fatal(err)
			}
			times = append(times, time.Since(start))
		}
		b.StopTimer()
		slices.Sort(times)
		b.ReportMetric(float64(times[len(times)/2].Nanoseconds())/1e3, "p50-µs")
		b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds())/1e3, "p99-µs")
	}
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
