// Command fleetbench measures the fleet tier on one machine: replicas are
// separate warm processes, each with an empty cache directory, loading one
// model at once from an origin throttled to network-storage speed, with
// and without a shared Redis (L3). It reports each replica's time and the
// bytes it read from the origin. With -cluster it also measures L3's read
// rate from a Redis Cluster of three masters: one process writes the model
// to L3, a fresh one (empty L2) loads it from there.
//
//	go run ./internal/tools/fleetbench -model /tmp/modelcache-bench/synthetic-1g.safetensors
//
// It starts and stops its own redis-server processes on loopback ports.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/modelcache/modelcache/internal/testredis"
)

// tb stands in for a test for package testredis.
type tb struct {
	dir      string
	cleanups []func()
}

func (t *tb) Helper()                   {}
func (t *tb) Fatal(a ...any)            { t.done(); log.Fatal(a...) }
func (t *tb) Fatalf(f string, a ...any) { t.done(); log.Fatalf(f, a...) }
func (t *tb) Skip(a ...any)             { t.done(); log.Fatal(a...) }
func (t *tb) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *tb) TempDir() string           { d, _ := os.MkdirTemp(t.dir, "redis"); return d }
func (t *tb) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}

type loadJSON struct {
	Seconds     float64 `json:"seconds"`
	SourceBytes uint64  `json:"source_bytes"`
	Bytes       uint64  `json:"bytes"`
	Served      struct {
		L1, L2, L3, Source int
	} `json:"served"`
	Error string `json:"error"`
}

type replica struct {
	Wall        float64 `json:"wall_seconds"`
	Load        float64 `json:"load_seconds"`
	SourceBytes uint64  `json:"source_bytes"`
	L3, Source  int
}

func main() {
	model := flag.String("model", "/tmp/modelcache-bench/synthetic-1g.safetensors", "the model")
	n := flag.Int("replicas", 4, "replicas")
	rate := flag.String("source-rate", "200MB", "the origin's rate, per replica")
	cluster := flag.Bool("cluster", true, "also measure L3 reads from a 3-master cluster")
	extra := flag.String("load-flags", "", "more flags for warm load, space-separated")
	flag.Parse()
	work, err := os.MkdirTemp("", "fleetbench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	t := &tb{dir: work}
	defer t.done()
	warmBin := filepath.Join(work, "warm")
	if out, err := exec.Command("go", "build", "-o", warmBin, "./cmd/warm").CombinedOutput(); err != nil {
		log.Fatalf("building warm: %v\n%s", err, out)
	}

	run := func(label string, redis string) []replica {
		var wg sync.WaitGroup
		res := make([]replica, *n)
		for i := range *n {
			wg.Go(func() {
				args := []string{"--dir", filepath.Join(work, fmt.Sprintf("%s-%d", label, i)), "--source-rate", *rate, "load", "--json"}
				args = append(append(args, strings.Fields(*extra)...), *model)
				if redis != "" {
					args = append([]string{"--redis", redis}, args...)
				}
				start := time.Now()
				out, err := exec.Command(warmBin, args...).Output()
				wall := time.Since(start).Seconds()
				if err != nil {
					log.Fatalf("replica %d: %v", i, err)
				}
				var r loadJSON
				if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil || r.Error != "" {
					log.Fatalf("replica %d: %v %s: %s", i, err, r.Error, out)
				}
				res[i] = replica{Wall: wall, Load: r.Seconds, SourceBytes: r.SourceBytes, L3: r.Served.L3, Source: r.Served.Source}
			})
		}
		wg.Wait()
		return res
	}
	fi, err := os.Stat(*model)
	if err != nil {
		log.Fatal(err)
	}
	// The load time is until the model is in the replica's memory; the
	// wall time adds what the process does before it exits (the L2 writes
	// the load left, from L3 or the file).
	report := func(label string, rs []replica) (load, wall float64) {
		fmt.Printf("%s:\n", label)
		var origin uint64
		for i, r := range rs {
			fmt.Printf("  replica %d: load %.2f s (process %.2f s), origin %.0f MB, tensors from l3 %d, source %d\n",
				i, r.Load, r.Wall, float64(r.SourceBytes)/1e6, r.L3, r.Source)
			load += r.Load
			wall += r.Wall
			origin += r.SourceBytes
		}
		load /= float64(len(rs))
		wall /= float64(len(rs))
		fmt.Printf("  mean load %.2f s (process %.2f s); origin read %.0f MB = %.2f× the model\n", load, wall, float64(origin)/1e6, float64(origin)/float64(fi.Size()))
		return load, wall
	}
	loadAlone, wallAlone := report(fmt.Sprintf("%d replicas, no L3", *n), run("alone", ""))
	srv := testredis.Start(t, "maxmemory 4gb", "maxmemory-policy allkeys-lru")
	loadFleet, wallFleet := report(fmt.Sprintf("%d replicas, one Redis (L3)", *n), run("fleet", srv.Addr))
	fmt.Printf("mean load time with L3 / without: %.2f (process: %.2f)\n", loadFleet/loadAlone, wallFleet/wallAlone)
	srv.Kill()

	if *cluster {
		cl := testredis.StartCluster(t, 3, 0, "maxmemory 2gb", "maxmemory-policy allkeys-lru")
		addrs := strings.Join(cl.Addrs(), ",")
		// One process writes the model to L3 (from the file, unthrottled);
		// fresh processes then load it from L3 alone.
		w := exec.Command(warmBin, "--redis", addrs, "--dir", filepath.Join(work, "writer"), "load", *model)
		if out, err := w.CombinedOutput(); err != nil {
			log.Fatalf("writing L3: %v\n%s", err, out)
		}
		fmt.Println("L3 reads from a 3-master cluster (fresh process, empty L2):")
		for i := range 3 {
			out, err := exec.Command(warmBin, "--redis", addrs, "--dir", filepath.Join(work, fmt.Sprintf("reader-%d", i)), "load", "--json", *model).Output()
			if err != nil {
				log.Fatalf("reader: %v", err)
			}
			var r loadJSON
			if err := json.Unmarshal(bytes.TrimSpace(out), &r); err != nil {
				log.Fatal(err)
			}
			fmt.Printf("  run %d: %.2f s, %.2f GB/s, tensors from l3 %d, source %d\n", i, r.Seconds, float64(r.Bytes)/r.Seconds/1e9, r.Served.L3, r.Served.Source)
		}
	}
}
