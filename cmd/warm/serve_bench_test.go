package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

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

// echo answers each byte on the unix socket with itself, until the
// connection closes.
func echo(socket string) {
	l, err := net.Listen("unix", socket)
	if err != nil {
		os.Exit(1)
	}
	c, err := l.Accept()
	if err != nil {
		os.Exit(1)
	}
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return
		}
		if _, err := c.Write(b); err != nil {
			return
		}
	}
}

// The floor of any request to another process on this machine: one byte
// there and back on a unix socket, between two Go processes.
//
//	go test -run '^$' -bench 'UnixRoundTrip' ./cmd/warm
func BenchmarkUnixRoundTrip(b *testing.B) {
	socket := filepath.Join(b.TempDir(), "echo.sock")
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "MODELCACHE_ECHO_SOCKET="+socket)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var c net.Conn
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if c, err = net.Dial("unix", socket); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	buf := []byte{1}
	benchutil.Latency(b, 100, func() error {
		if _, err := c.Write(buf); err != nil {
			return err
		}
		_, err := c.Read(buf)
		return err
	})
}
