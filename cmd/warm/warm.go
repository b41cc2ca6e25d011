package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/sync/errgroup"
	"golang.org/x/term"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/l2"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/resolve"
	"github.com/modelcache/modelcache/tier"
)

// modelExtensions are the files warm picks up when it walks a directory;
// other files are cached only when named (as plain files). A directory
// holding a model.safetensors.index.json is one sharded model.
var modelExtensions = []string{".safetensors", ".gguf", ".npy", ".npz"}

type warmFlags struct {
	jobs int
	json bool
}

// warmFile is one file's line of the --json summary.
type warmFile struct {
	File         string  `json:"file"`
	Tensors      int     `json:"tensors"`
	Written      int     `json:"written"`
	Skipped      int     `json:"skipped"`
	LogicalBytes uint64  `json:"logical_bytes"`
	Seconds      float64 `json:"seconds"`
	Error        string  `json:"error,omitempty"`
}

// warmSummary is the contract of "warm --json".
type warmSummary struct {
	Dir          string     `json:"dir"`
	Files        []warmFile `json:"files"`
	Failed       int        `json:"failed"`
	Interrupted  bool       `json:"interrupted"`
	Seconds      float64    `json:"seconds"`
	Entries      int        `json:"entries"`
	LogicalBytes uint64     `json:"logical_bytes"`
	StoredBytes  uint64     `json:"stored_bytes"`
	DiskBytes    int64      `json:"disk_bytes"`
}

// expandArgs turns the arguments into models: names (hf:, ollama:) are
// resolved, directories are walked for model files and sharded checkpoints,
// in name order, following symbolic links (a Hugging Face snapshot is made
// of them) but never round a loop. Paths that cannot be read are returned
// as errors, to be reported like bad files.
func expandArgs(args []string) ([]string, []error) {
	var files []string
	var errs []error
	for _, a := range args {
		p, err := resolve.Name(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		if _, ok := loader.ShardIndexPath(p); ok {
			files = append(files, p)
			continue
		}
		w := &walker{seen: map[fileKey]bool{}}
		err = w.walk(p, fi, 0)
		if err != nil {
			errs = append(errs, err)
		}
		if len(w.found) == 0 && err == nil {
			errs = append(errs, fmt.Errorf("%s: no model files (%s) found", a, strings.Join(modelExtensions, ", ")))
		}
		files = append(files, w.found...)
	}
	return files, errs
}

// fileKey identifies a directory, to walk each once.
type fileKey struct{ dev, ino uint64 }

type walker struct {
	seen  map[fileKey]bool
	found []string
}

// maxWalkDepth bounds the directories walked into one another, as the
// kernel bounds links followed (ELOOP): where directories have no inode to
// tell a loop by, the depth ends it.
const maxWalkDepth = 40

// walk adds the models under dir (whose FileInfo, links followed, is fi).
func (w *walker) walk(dir string, fi os.FileInfo, depth int) error {
	if depth > maxWalkDepth {
		return fmt.Errorf("%s: directories nested more than %d deep (a loop of links?)", dir, maxWalkDepth)
	}
	if k, ok := keyOf(fi); ok {
		if w.seen[k] {
			return nil // a link back to a directory already walked
		}
		w.seen[k] = true
	}
	if _, ok := loader.ShardIndexPath(dir); ok {
		w.found = append(w.found, dir) // its shards are warmed with it
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		fi, err := os.Stat(p) // follows links
		if err != nil {
			if e.Type()&fs.ModeSymlink != 0 {
				continue // a dangling link: nothing to warm
			}
			return err
		}
		switch {
		case fi.IsDir():
			if err := w.walk(p, fi, depth+1); err != nil {
				return err
			}
		case fi.Mode().IsRegular() && slices.Contains(modelExtensions, strings.ToLower(filepath.Ext(p))):
			w.found = append(w.found, p)
		}
	}
	return nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// warmFiles warms the files, w.jobs at a time. A bad file is reported on one
// line and does not stop the others, but makes the exit status 1.
func (g *globals) warmFiles(ctx context.Context, args []string, w *warmFlags) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	begin := time.Now()
	files, bad := expandArgs(args)
	sum := warmSummary{Dir: g.dir}
	for _, err := range bad {
		fmt.Fprintf(g.stderr, "warm: %v\n", err)
		sum.Failed++
	}

	var bar *progressbar.ProgressBar
	if !w.json && isTerminal(g.stderr) {
		// The total grows as each model's Warm reports its own, first.
		bar = progressbar.NewOptions64(0,
			progressbar.OptionSetWriter(g.stderr),
			progressbar.OptionSetDescription("warming"),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}

	// Through the daemon named by --server, or the one that holds the
	// directory; else in this process.
	var c *tier.Cache
	d := g.daemon()
	if d == nil {
		var err error
		if c, d, err = g.openOrDaemon(); err != nil {
			return err
		}
	}
	if d != nil {
		defer d.Close()
	}
	results := make([]warmFile, len(files))
	var mu sync.Mutex    // serializes output lines
	var barMu sync.Mutex // serializes growing the bar's total
	var eg errgroup.Group
	eg.SetLimit(w.jobs)
	for i, f := range files {
		eg.Go(func() error {
			r := &results[i]
			r.File = f
			if ctx.Err() != nil {
				r.Error = ctx.Err().Error()
				return nil
			}
			start := time.Now()
			var opts tier.WarmOptions
			if bar != nil {
				opts.Progress = func(p tier.WarmProgress) {
					if p.Tensor == "" {
						barMu.Lock()
						bar.ChangeMax64(bar.GetMax64() + int64(p.TotalBytes))
						barMu.Unlock()
						return
					}
					_ = bar.Add64(int64(p.Bytes))
				}
			}
			var res *tier.WarmResult
			var err error
			if d != nil {
				var progress func(client.WarmProgress)
				if opts.Progress != nil {
					progress = func(p client.WarmProgress) { opts.Progress(tier.WarmProgress(p)) }
				}
				var dr *client.WarmResult
				dr, err = d.Warm(ctx, f, progress)
				res = (*tier.WarmResult)(dr)
			} else {
				res, err = warmOne(ctx, c, f, &opts)
			}
			r.Seconds = time.Since(start).Seconds()
			if res != nil {
				r.Tensors, r.Written, r.Skipped, r.LogicalBytes = res.Tensors, res.Written, res.Skipped, res.LogicalBytes
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.Error = err.Error()
				if !errors.Is(err, context.Canceled) {
					if bar != nil {
						_ = bar.Clear()
					}
					fmt.Fprintf(g.stderr, "warm: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
				}
				return nil
			}
			if !w.json && bar == nil {
				fmt.Fprintf(g.stdout, "%s: %d tensors, %s: %d cached now, %d already cached (%s, %s/s)\n",
					f, res.Tensors, humanize.IBytes(res.LogicalBytes), res.Written, res.Skipped,
					time.Duration(r.Seconds*float64(time.Second)).Round(time.Millisecond),
					humanize.IBytes(uint64(float64(res.LogicalBytes)/max(r.Seconds, 1e-9))))
			}
			return nil
		})
	}
	_ = eg.Wait()
	if bar != nil {
		_ = bar.Finish()
	}
	var st l2.Stats
	if d != nil {
		if s, err := d.Stats(context.Background()); err == nil {
			st = l2.Stats(s.L2)
		}
	} else {
		st = c.Stats().L2
		if err := c.Close(); err != nil {
			return err
		}
		// As du finds it now that the store gave back what it preallocates
		// while open.
		if du, err := l2.DiskUsage(g.dir); err == nil && st.Dir != "" {
			st.DiskBytes = du
		}
	}
	sum.Interrupted = ctx.Err() != nil
	sum.Files = results
	for _, r := range results {
		if r.Error != "" && !(sum.Interrupted && r.Error == context.Canceled.Error()) {
			sum.Failed++
		}
	}
	sum.Seconds = time.Since(begin).Seconds()
	sum.Entries, sum.LogicalBytes, sum.StoredBytes, sum.DiskBytes = st.Entries, st.LogicalBytes, st.StoredBytes, st.DiskBytes
	if w.json {
		if err := json.NewEncoder(g.stdout).Encode(sum); err != nil {
			return err
		}
	} else {
		if bar != nil {
			for _, r := range results {
				if r.Error == "" {
					fmt.Fprintf(g.stdout, "%s: %d tensors, %s: %d cached now, %d already cached\n",
						r.File, r.Tensors, humanize.IBytes(r.LogicalBytes), r.Written, r.Skipped)
				}
			}
		}
		fmt.Fprintf(g.stdout, "cache %s: %d entries, %s logical, %s stored\n",
			g.dir, st.Entries, humanize.IBytes(st.LogicalBytes), humanize.IBytes(st.StoredBytes))
	}
	if sum.Interrupted {
		done := 0
		for _, r := range results {
			if r.Error == "" {
				done++
			}
		}
		fmt.Fprintf(g.stderr, "warm: interrupted: %d of %d files complete; run the same command again to resume\n", done, len(files))
		return errInterrupted
	}
	if sum.Failed > 0 {
		return errReported
	}
	return nil
}

// warmOne warms the model at path, opened once: its header is parsed once,
// for the totals and for the warming.
func warmOne(ctx context.Context, c *tier.Cache, path string, opts *tier.WarmOptions) (*tier.WarmResult, error) {
	m, err := c.Model(ctx, path)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	return m.Warm(ctx, opts)
}
