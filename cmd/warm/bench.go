package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/pace"
	"github.com/modelcache/modelcache/internal/pagecache"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/resolve"
	"github.com/modelcache/modelcache/tier"
)

// The modes of warm bench, in the order they run and are shown.
var benchModes = []string{
	"cold_raw", "warm_raw", "cold_mmap", "warm_mmap",
	"l2_cold", "l2_warm", "l1",
	"load_source", "load_cold", "load_warm", "load_l1",
}

// perTensorModes read tensor by tensor and have per-tensor latencies; the
// others read the whole model at once.
var perTensorModes = []string{"cold_mmap", "warm_mmap", "l2_cold", "l2_warm", "l1"}

type latency struct {
	P50 float64 `json:"p50_us"`
	P99 float64 `json:"p99_us"`
}

// benchReport is one file's result; its JSON form is the contract of
// "warm bench --json".
type benchReport struct {
	File          string             `json:"file"`
	Bytes         uint64             `json:"bytes"`
	Tensors       int                `json:"tensors"`
	StoredRatio   float64            `json:"stored_ratio"`
	WarmGBps      float64            `json:"warm_gbps"`
	ColdRawGBps   float64            `json:"cold_raw_gbps"`
	WarmRawGBps   float64            `json:"warm_raw_gbps"`
	ColdMmapGBps  float64            `json:"cold_mmap_gbps"`
	WarmMmapGBps  float64            `json:"warm_mmap_gbps"`
	L2ColdGBps    float64            `json:"l2_cold_gbps"`
	L2WarmGBps    float64            `json:"l2_warm_gbps"`
	L1GBps        float64            `json:"l1_gbps"`
	LoadSource    float64            `json:"load_source_gbps"`
	LoadColdGBps  float64            `json:"load_cold_gbps"`
	LoadWarmGBps  float64            `json:"load_warm_gbps"`
	LoadL1GBps    float64            `json:"load_l1_gbps"`
	ColdResidency float64            `json:"cold_residency"`
	SourceRate    uint64             `json:"source_rate_bytes_per_s,omitempty"`
	Runs          int                `json:"runs"`
	Latency       map[string]latency `json:"latency"`
}

// rateOf is the field holding the rate of a mode.
func (r *benchReport) rateOf(mode string) *float64 {
	switch mode {
	case "cold_raw":
		return &r.ColdRawGBps
	case "warm_raw":
		return &r.WarmRawGBps
	case "l2_cold":
		return &r.L2ColdGBps
	case "l2_warm":
		return &r.L2WarmGBps
	case "l1":
		return &r.L1GBps
	case "cold_mmap":
		return &r.ColdMmapGBps
	case "warm_mmap":
		return &r.WarmMmapGBps
	case "load_source":
		return &r.LoadSource
	case "load_cold":
		return &r.LoadColdGBps
	case "load_warm":
		return &r.LoadWarmGBps
	case "load_l1":
		return &r.LoadL1GBps
	}
	panic("warm: unknown bench mode " + mode)
}

func (r *benchReport) rate(mode string) float64 { return *r.rateOf(mode) }

type benchOptions struct {
	runs       int
	sourceRate uint64 // bytes per second; 0: unthrottled
}

func newBenchCmd(g *globals) *cobra.Command {
	var asJSON bool
	var runs int
	var markdown, section, chart string
	cmd := &cobra.Command{
		Use:   "bench [flags] FILE...",
		Short: "Measure reads through each tier against cold and warm reads of the file",
		Long: `bench measures, for each model file, the rate of reading all its tensors
(logical bytes per second of wall time) in these ways:

  cold_raw     the best way to read the file itself: the whole file in
               32 MiB positioned reads, 8 in flight, evicted from the OS page
               cache first (fsync, POSIX_FADV_DONTNEED; mincore confirms, see
               cold_residency)
  warm_raw     the same, the file in the page cache
  cold_mmap    tensor by tensor through the file's mapping (page faults),
               evicted first: how a naive loader reads
  warm_mmap    the same, in the page cache
  l2_cold      tensor by tensor (Cache.Tensor) through a freshly opened
               cache, L1 empty, L2 files evicted
  l2_warm      the same with L2 files in the page cache
  l1           tensor by tensor, every tensor served from RAM
  load_source  the whole model (Model.Load) into an empty cache directory,
               from the file evicted from the page cache, promoting to L2
  load_cold    the whole model through a freshly opened cache, L2 evicted
  load_warm    the same with L2 files in the page cache
  load_l1      the whole model from RAM

plus the rate of warming L2 from the file in the page cache (warm_gbps),
stored/logical bytes, and per-tensor latency p50/p99 for the tensor-by-tensor
modes. Each mode runs --runs times; the median run is reported. Without --dir
it uses a new temporary directory, removed afterwards. --source-rate
throttles every read of the model file (raw, mmap and the cache's) to
emulate network storage.`,
		Example: `  warm bench model.safetensors
  warm bench --json --runs 5 model.safetensors
  warm --source-rate 200MB bench model.safetensors   # a source as slow as network storage`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runs < 1 {
				return usageError{fmt.Errorf("--runs must be at least 1, got %d", runs)}
			}
			opts := benchOptions{runs: runs}
			rate, err := parseSize("source-rate", g.sourceRate)
			if err != nil {
				return err
			}
			opts.sourceRate = uint64(rate)
			if !pagecache.Supported {
				return fmt.Errorf("bench: the cold modes evict files from the page cache (posix_fadvise, mincore), which needs Linux: %w", errs.ErrUnsupported)
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			dir := g.dir
			if !cmd.Flags().Changed("dir") {
				tmp, err := os.MkdirTemp("", "warm-bench")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				dir = tmp
			}
			var reports []*benchReport
			for _, f := range args {
				r, err := g.benchFile(ctx, f, dir, opts)
				if err != nil {
					return err
				}
				reports = append(reports, r)
				if asJSON {
					if err := json.NewEncoder(g.stdout).Encode(r); err != nil {
						return err
					}
				}
			}
			if !asJSON {
				printBenchTable(g, reports)
			}
			if chart != "" {
				if err := os.WriteFile(chart, []byte(benchChart(reports)), 0o644); err != nil {
					return err
				}
			}
			if markdown != "" {
				return spliceMarkdown(markdown, section, benchMarkdown(reports, chart))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per file")
	cmd.Flags().IntVar(&runs, "runs", 3, "runs of each mode; the median is reported")
	cmd.Flags().StringVar(&markdown, "markdown", "", "write the results into this Markdown file, between the markers of --section")
	cmd.Flags().StringVar(&section, "section", "main", "the name of the section --markdown writes (<!-- warm-bench:NAME:start/end -->)")
	cmd.Flags().StringVar(&chart, "chart", "", "write an SVG chart of the rates to this file")
	return cmd
}

// pass is one timed pass over all tensors.
type pass struct {
	total time.Duration
	per   []time.Duration
}

func median(runs []pass) pass {
	slices.SortFunc(runs, func(a, b pass) int { return int(a.total - b.total) })
	return runs[len(runs)/2]
}

func gbps(bytes uint64, d time.Duration) float64 {
	return float64(bytes) / max(d.Seconds(), 1e-9) / 1e9
}

func percentiles(per []time.Duration) latency {
	s := slices.Clone(per)
	slices.Sort(s)
	at := func(q float64) float64 {
		return float64(s[min(len(s)-1, int(q*float64(len(s))))].Nanoseconds()) / 1e3
	}
	return latency{P50: at(0.50), P99: at(0.99)}
}

// benchFile runs every mode on one file.
func (g *globals) benchFile(ctx context.Context, path, dir string, o benchOptions) (*benchReport, error) {
	path, err := resolve.Name(path)
	if err != nil {
		return nil, err
	}
	lf, err := loader.Open(path)
	if err != nil {
		return nil, err
	}
	tensors := slices.Clone(lf.Tensors())
	lf.Close()
	rep := &benchReport{File: path, Tensors: len(tensors), Runs: o.runs, SourceRate: o.sourceRate, Latency: map[string]latency{}}
	for _, t := range tensors {
		rep.Bytes += t.Length
	}
	if rep.Tensors == 0 {
		return nil, fmt.Errorf("%s: no tensors to measure", path)
	}

	// link paces the raw and mapped reads of a pass at --source-rate, as
	// the cache's own reads are (tier.Throttle): the same link model.
	link := func() func(n int) {
		if o.sourceRate == 0 {
			return func(int) {}
		}
		l := pace.New(int64(o.sourceRate))
		return l.Wait
	}
	rawBufs := make([][]byte, rawParallel) // allocated once, as a loader's are
	raw := func() (pass, error) {
		begin := time.Now()
		if err := preadAll(path, rawBufs, link()); err != nil {
			return pass{}, err
		}
		return pass{total: time.Since(begin)}, nil
	}
	mapped := func() (pass, error) {
		f, err := loader.Open(path)
		if err != nil {
			return pass{}, err
		}
		defer f.Close()
		r := pass{per: make([]time.Duration, 0, len(tensors))}
		wait := link()
		begin := time.Now()
		for _, t := range tensors {
			t0 := time.Now()
			if _, err := f.ReadTensor(t.Name); err != nil {
				return pass{}, err
			}
			wait(int(t.Length))
			r.per = append(r.per, time.Since(t0))
		}
		r.total = time.Since(begin)
		return r, nil
	}
	cached := func(c *tier.Cache, want tier.Tier) (pass, error) {
		r := pass{per: make([]time.Duration, 0, len(tensors))}
		begin := time.Now()
		for _, t := range tensors {
			t0 := time.Now()
			tn, err := c.Tensor(ctx, path, t.Name)
			if err != nil {
				return pass{}, err
			}
			if tn.ServedBy != want {
				return pass{}, fmt.Errorf("%s: tensor %s served by %s, not %s (is the cache large enough?)", path, errs.Quote(t.Name), tn.ServedBy, want)
			}
			r.per = append(r.per, time.Since(t0))
		}
		r.total = time.Since(begin)
		return r, nil
	}
	pool := newBufferPool() // every load's buffers, reused as a loader's are
	// load times Model.Load alone (the model opened first), and checks
	// that every tensor came from want.
	load := func(c *tier.Cache, want tier.Tier) (pass, error) {
		r := loadOne(ctx, c, path, &tier.LoadOptions{}, pool)
		if r.Error != "" {
			return pass{}, errors.New(r.Error)
		}
		served := map[tier.Tier]int{tier.L1: r.Served.L1, tier.L2: r.Served.L2, tier.Source: r.Served.Source}
		if served[want] != r.Tensors {
			return pass{}, fmt.Errorf("%s: load served %d of %d tensors from %s (l1 %d, l2 %d, source %d; is the cache large enough?)",
				path, served[want], r.Tensors, want, r.Served.L1, r.Served.L2, r.Served.Source)
		}
		return pass{total: time.Duration(r.Seconds * float64(time.Second))}, nil
	}
	throughL2 := func(evict bool, read func(*tier.Cache, tier.Tier) (pass, error)) (pass, error) {
		if evict {
			if err := g.evictCold(dir, rep); err != nil {
				return pass{}, err
			}
		}
		c, err := g.openAt(dir, 1) // L1 admits nothing: every read is from L2
		if err != nil {
			return pass{}, err
		}
		defer c.Close()
		return read(c, tier.L2)
	}
	// fromSource loads the model into a new, empty cache directory, the
	// file evicted, and closes the cache (its queued writes finish) outside
	// the time measured.
	fromSource := func() (pass, error) {
		tmp, err := os.MkdirTemp(filepath.Dir(dir), ".warm-bench-source")
		if err != nil {
			return pass{}, err
		}
		defer os.RemoveAll(tmp)
		if err := g.evictCold(path, rep); err != nil {
			return pass{}, err
		}
		c, err := g.openAt(tmp, 1)
		if err != nil {
			return pass{}, err
		}
		r, err := load(c, tier.Source)
		if cerr := c.Close(); err == nil {
			err = cerr
		}
		return r, err
	}

	// Warm L2 (timed, Close included: it syncs), with the file in the page
	// cache so that this measures L2's write path, and take the ratio.
	if _, err := raw(); err != nil {
		return nil, err
	}
	c, err := g.openAt(dir, 1)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	wr, err := c.Warm(ctx, path)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if wr.Written == wr.Tensors {
		rep.WarmGBps = gbps(rep.Bytes, time.Since(start))
	}
	if c, err = g.openAt(dir, 1); err != nil {
		return nil, err
	}
	_, logical, stored, err := c.FileEntries(path)
	c.Close()
	if err != nil {
		return nil, err
	}
	if logical > 0 {
		rep.StoredRatio = float64(stored) / float64(logical)
	}

	l1Bytes := int64(rep.Bytes) + int64(rep.Tensors)*1024 + 1<<20
	results := map[string][]pass{}
	for _, mode := range benchModes {
		var l1 *tier.Cache
		switch mode {
		case "warm_raw":
			if _, err := raw(); err != nil { // load the page cache
				return nil, err
			}
		case "l2_warm", "load_warm":
			if _, err := throughL2(false, cached); err != nil {
				return nil, err
			}
		case "l1", "load_l1":
			if l1, err = g.openAt(dir, l1Bytes); err != nil {
				return nil, err
			}
			if _, err := cached(l1, tier.L2); err != nil {
				l1.Close()
				return nil, err
			}
		}
		for range o.runs {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			var r pass
			var err error
			switch mode {
			case "cold_raw":
				if err = g.evictCold(path, rep); err == nil {
					r, err = raw()
				}
			case "warm_raw":
				r, err = raw()
			case "cold_mmap":
				if err = g.evictCold(path, rep); err == nil {
					r, err = mapped()
				}
			case "warm_mmap":
				r, err = mapped()
			case "l2_cold":
				r, err = throughL2(true, cached)
			case "l2_warm":
				r, err = throughL2(false, cached)
			case "l1":
				r, err = cached(l1, tier.L1)
			case "load_source":
				r, err = fromSource()
			case "load_cold":
				r, err = throughL2(true, load)
			case "load_warm":
				r, err = throughL2(false, load)
			case "load_l1":
				r, err = load(l1, tier.L1)
			}
			if err != nil {
				if l1 != nil {
					l1.Close()
				}
				return nil, err
			}
			results[mode] = append(results[mode], r)
		}
		if l1 != nil {
			l1.Close()
		}
		m := median(results[mode])
		if len(m.per) > 0 {
			rep.Latency[mode] = percentiles(m.per)
		}
		*rep.rateOf(mode) = gbps(rep.Bytes, m.total)
	}
	return rep, nil
}

// Blocks and parallelism of the raw reader: trying 4–32 MiB blocks and 2–16
// in flight on a cold file here (best of three runs each; the disk's own
// rate varied 1.5–3.2 GB/s between runs), 32 MiB × 8 was never far from the
// best; smaller blocks sometimes were. A strong baseline, not a flattering one.
const (
	rawBlock    = 32 << 20
	rawParallel = 8
)

// preadAll reads the whole file at path in positioned reads of up to
// rawBlock bytes, one reader per buffer in bufs (allocated here when nil or
// too small, and kept for the next call), calling done after each.
func preadAll(path string, bufs [][]byte, done func(n int)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	// A small file is split among the readers too, in blocks of 1 MiB or
	// more.
	block := min(int64(rawBlock), max((size+int64(len(bufs))-1)/int64(len(bufs)), 1<<20))
	var next atomic.Int64
	var g errgroup.Group
	for k := range bufs {
		if int64(len(bufs[k])) < block {
			bufs[k] = make([]byte, block)
		}
		buf := bufs[k][:block]
		g.Go(func() error {
			for {
				off := next.Add(block) - block
				if off >= size {
					return nil
				}
				n, err := f.ReadAt(buf[:min(block, size-off)], off)
				if err != nil && !(err == io.EOF && off+int64(n) == size) {
					return fmt.Errorf("%s: %w", path, err)
				}
				done(n)
			}
		})
	}
	return g.Wait()
}

// evictCold drops root from the page cache and records how much stayed.
func (g *globals) evictCold(root string, rep *benchReport) error {
	if err := pagecache.EvictAll(root); err != nil {
		return err
	}
	frac, err := pagecache.ResidentFraction(root)
	if err != nil {
		return err
	}
	rep.ColdResidency = max(rep.ColdResidency, frac)
	if frac > 0.05 {
		fmt.Fprintf(g.stderr, "warm: bench: %.1f%% of %s stayed in the page cache after eviction; cold rates are optimistic\n", frac*100, root)
	}
	return nil
}

func printBenchTable(g *globals, reports []*benchReport) {
	tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "file\tbytes\ttensors\tstored\twarm\t")
	for _, m := range benchModes {
		fmt.Fprintf(tw, "%s\t", m)
	}
	fmt.Fprintln(tw)
	for _, r := range reports {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.2f\t", r.File, humanize.IBytes(r.Bytes), r.Tensors, r.StoredRatio, r.WarmGBps)
		for _, m := range benchModes {
			fmt.Fprintf(tw, "%.2f\t", r.rate(m))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintln(g.stdout, "rates in GB/s of logical tensor bytes; stored = stored/logical bytes in L2")
	for _, r := range reports {
		var parts []string
		for _, m := range perTensorModes {
			l := r.Latency[m]
			parts = append(parts, fmt.Sprintf("%s %.0f/%.0f", m, l.P50, l.P99))
		}
		fmt.Fprintf(g.stdout, "%s: load_cold/cold_raw %.2f×, load_source/cold_raw %.2f×; per-tensor latency p50/p99 µs: %s; page cache residency after eviction ≤ %.1f%%\n",
			r.File, r.LoadColdGBps/r.ColdRawGBps, r.LoadSource/r.ColdRawGBps, strings.Join(parts, ", "), r.ColdResidency*100)
	}
}

func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if name, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(name), ":"))
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d cores, %s %s/%s", cpu, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
