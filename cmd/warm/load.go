package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/resolve"
	"github.com/modelcache/modelcache/tier"
)

// loadResult is one model's line of "warm load --json": a contract.
type loadResult struct {
	Path    string     `json:"path"`
	Tensors int        `json:"tensors"`
	Bytes   uint64     `json:"bytes"`
	Seconds float64    `json:"seconds"`
	GBps    float64    `json:"gbps"`
	Served  loadServed `json:"served"`
	// SourceBytes are the bytes read from the model files: the origin's
	// traffic.
	SourceBytes uint64 `json:"source_bytes"`
	Error       string `json:"error,omitempty"`
}

type loadServed struct {
	L1     int `json:"l1"`
	L2     int `json:"l2"`
	L3     int `json:"l3"`
	Source int `json:"source"`
	Shared int `json:"shared,omitempty"` // joined another read of the same tensor in this process
}

func newLoadCmd(g *globals) *cobra.Command {
	var asJSON bool
	var order, inFlight, cpuProfile, transport string
	var parallel, repeat int
	cmd := &cobra.Command{
		Use:   "load [flags] FILE|DIR...",
		Short: "Load every tensor of models through the cache, as a model-loading program would",
		Long: `load reads every tensor of each model through the cache (RAM, then the cache
directory, then the file itself, promoting what it reads) with the streaming
pipeline a model-loading program uses (tier.Model.Load), discards the bytes,
and prints per model: tensors, bytes, seconds (the load alone, not process
start or opening the cache), GB/s, and how many tensors each tier served.
Models are named as for warm: files, sharded checkpoints, directories.

--json prints one object per model: path, tensors, bytes, seconds, gbps,
served {l1, l2, l3, source}, and source_bytes, the bytes read from the model
files (the origin's traffic).`,
		Example: `  warm load model.safetensors
  warm load --json /models/Llama-3-8B/ | jq .gbps
  warm load --source-rate 200MB model.safetensors   # against a slow origin
  warm load -n 3 --memory 512MiB big.safetensors    # a loop through a small L1`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var o tier.LoadOptions
			switch order {
			case "file":
				o.Order = tier.FileOrder
			case "ready":
				o.Order = tier.ReadyOrder
			default:
				return usageError{fmt.Errorf("--order: %q is not file or ready", order)}
			}
			n, err := parseSize("in-flight", inFlight)
			if err != nil {
				return err
			}
			o.MaxInFlight, o.Parallel = n, parallel
			if parallel < 0 || repeat < 1 {
				return usageError{fmt.Errorf("--parallel must not be negative and -n at least 1")}
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
			defer stop()
			files, bad := expandArgs(args)
			failed := len(bad)
			for _, err := range bad {
				fmt.Fprintf(g.stderr, "warm: %v\n", err)
			}
			pool := newBufferPool()
			if transport != "http" && transport != "shm" {
				return usageError{fmt.Errorf("--transport: %q is not http or shm", transport)}
			}
			if transport == "shm" && runtime.GOOS != "linux" {
				return usageError{fmt.Errorf("--transport shm: shared memory needs Linux (memfd); use --transport http")}
			}
			err = g.viaDaemonOr(func(d *client.Client) error {
				for _, f := range files {
					for range repeat {
						r := loadFromDaemon(ctx, d, f, o.Parallel, transport)
						if r.Error != "" {
							failed++
							fmt.Fprintf(g.stderr, "warm: %s\n", r.Error)
							break
						}
						printLoad(g, r, asJSON)
					}
				}
				return nil
			}, func(c *tier.Cache) error {
				if cpuProfile != "" {
					// The loads alone: opening and closing the cache are not profiled.
					pf, err := os.Create(cpuProfile)
					if err != nil {
						return err
					}
					defer pf.Close()
					if err := pprof.StartCPUProfile(pf); err != nil {
						return err
					}
					defer pprof.StopCPUProfile()
				}
				for _, f := range files {
					for range repeat {
						r := loadOne(ctx, c, f, &o, pool)
						if r.Error != "" {
							failed++
							fmt.Fprintf(g.stderr, "warm: %s\n", r.Error)
							break
						}
						printLoad(g, r, asJSON)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			if ctx.Err() != nil {
				return errInterrupted
			}
			if failed > 0 {
				return errReported
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per model")
	cmd.Flags().StringVar(&order, "order", "file", "deliver tensors in file order or as they are ready (file|ready)")
	cmd.Flags().StringVar(&inFlight, "in-flight", "", "bytes read ahead of delivery at most (default 256MiB)")
	cmd.Flags().IntVar(&parallel, "parallel", 0, "tensors read at once (default twice the cores, at least 4)")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the loads to this file (go tool pprof)")
	cmd.Flags().StringVar(&transport, "transport", "http", "with --server: http (bytes through the socket) or shm (the daemon's shared memory, mapped: Linux, unix socket)")
	cmd.Flags().IntVarP(&repeat, "count", "n", 1, "load each model this many times (later loads show the RAM tier)")
	return cmd
}

// loadOne loads the model at path into buffers from pool and discards its
// bytes.
func loadOne(ctx context.Context, c *tier.Cache, path string, o *tier.LoadOptions, pool *bufferPool) loadResult {
	r := loadResult{Path: path}
	m, err := c.Model(ctx, path)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer m.Close()
	// A loading program reads into buffers it owns (pinned memory,
	// staging areas) and reuses; so does load, through Into, so that it
	// measures the cache and not the Go heap's page faults.
	opts := *o
	opts.Into = pool.get
	res, err := m.Load(ctx, &opts, func(t *tier.Tensor) error { pool.put(t.Bytes()); return nil })
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Path, r.Tensors, r.Bytes = res.Path, res.Tensors, res.Bytes
	r.Seconds, r.GBps = res.Elapsed.Seconds(), res.GBps()
	r.Served = loadServed{L1: res.L1, L2: res.L2, L3: res.L3, Source: res.Source, Shared: res.Shared}
	r.SourceBytes = res.SourceBytes
	return r
}

func newBufferPool() *bufferPool { return &bufferPool{free: map[uint64][][]byte{}} }

// bufferPool recycles tensor buffers by size.
type bufferPool struct {
	mu   sync.Mutex
	free map[uint64][][]byte
}

func (p *bufferPool) get(t *tier.TensorInfo) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.free[t.Bytes]; len(l) > 0 {
		p.free[t.Bytes] = l[:len(l)-1]
		return l[len(l)-1], nil
	}
	return make([]byte, t.Bytes), nil
}

func (p *bufferPool) put(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free[uint64(len(b))] = append(p.free[uint64(len(b))], b)
}

// printLoad prints one model's load as a line, or as JSON.
func printLoad(g *globals, r loadResult, asJSON bool) {
	if asJSON {
		_ = json.NewEncoder(g.stdout).Encode(r)
		return
	}
	fmt.Fprintf(g.stdout, "%s: %d tensors, %s in %.3f s, %.2f GB/s; served l1 %d, l2 %d, l3 %d, source %d\n",
		r.Path, r.Tensors, humanize.IBytes(r.Bytes), r.Seconds, r.GBps, r.Served.L1, r.Served.L2, r.Served.L3, r.Served.Source)
}

// loadFromDaemon loads every tensor of the model through a warm serve
// daemon; served counts what the daemon's tiers served.
func loadFromDaemon(ctx context.Context, d *client.Client, path string, parallel int, transport string) loadResult {
	r := loadResult{Path: path}
	if abs, err := resolve.Abs(path); err == nil {
		path = abs // as the client sends it
	}
	start := time.Now()
	if transport == "shm" {
		// One mapping of the daemon's shared memory: no byte crosses the
		// socket. The daemon's tiers are not told apart: all is "l1".
		mm, err := d.MapModel(ctx, path)
		if err != nil {
			r.Error = err.Error()
			return r
		}
		r.Tensors, r.Bytes, r.Served.L1 = len(mm.Tensors), uint64(len(mm.Bytes())), len(mm.Tensors)
		mm.Close()
		r.Path, r.Seconds = path, time.Since(start).Seconds()
		if r.Seconds > 0 {
			r.GBps = float64(r.Bytes) / r.Seconds / 1e9
		}
		return r
	}
	err := d.Load(ctx, path, parallel, func(t *client.Tensor) error {
		r.Tensors++
		r.Bytes += uint64(len(t.Data))
		switch t.ServedBy {
		case "l1":
			r.Served.L1++
		case "l2":
			r.Served.L2++
		case "l3":
			r.Served.L3++
		default:
			r.Served.Source++
			r.SourceBytes += uint64(len(t.Data))
		}
		return nil
	})
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Path = path
	r.Seconds = time.Since(start).Seconds()
	if r.Seconds > 0 {
		r.GBps = float64(r.Bytes) / r.Seconds / 1e9
	}
	return r
}
