package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/tier"
)

// maxValueStdin bounds what "warm value put" copies from a pipe to a
// temporary file, so that a stream that never ends cannot fill the disk.
const maxValueStdin = 4 << 30

// putValue stores stdin as the value of k in ns: through the daemon that
// holds the directory, streamed as it is read; in process, streamed from a
// file, or from a pipe spooled to a temporary file first (PutReader needs
// the length), so that memory never grows with the value.
func putValue(ctx context.Context, g *globals, ns, k string, o *tier.PutOptions) error {
	size := int64(-1)
	if fi, err := os.Stdin.Stat(); err == nil && fi.Mode().IsRegular() {
		// From its offset: "< FILE" after a read of part of it.
		if off, err := os.Stdin.Seek(0, io.SeekCurrent); err == nil {
			size = fi.Size() - off
		}
	}
	return g.viaDaemonOr(func(d *client.Client) error {
		var in io.Reader = os.Stdin
		if size < 0 {
			in = &limitedStdin{r: os.Stdin, left: maxValueStdin}
		}
		return d.PutReader(ctx, ns, k, in, size, (*client.PutOptions)(o))
	}, func(c *tier.Cache) error {
		if size >= 0 {
			return c.PutReader(ctx, ns, k, os.Stdin, size, o)
		}
		f, n, err := spool(g.dir, os.Stdin)
		if err != nil {
			return err
		}
		defer f.Close()
		return c.PutReader(ctx, ns, k, f, n, o)
	})
}

// spool copies r, at most maxValueStdin bytes, to a temporary file in dir
// (else $TMPDIR), unlinked at once so that nothing is left behind, and
// returns it at its start with its length.
func spool(dir string, r io.Reader) (*os.File, int64, error) {
	f, err := os.CreateTemp(dir, ".value-put-*")
	if err != nil {
		if f, err = os.CreateTemp("", "warm-value-put-*"); err != nil {
			return nil, 0, fmt.Errorf("reading stdin: a temporary file for it: %w", err)
		}
	}
	_ = os.Remove(f.Name())
	n, err := io.Copy(f, &limitedStdin{r: r, left: maxValueStdin})
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

// limitedStdin reads stdin up to left bytes; more is an error.
type limitedStdin struct {
	r    io.Reader
	left int64
}

func (l *limitedStdin) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			return 0, fmt.Errorf("stdin holds more than %s: redirect it from a file (< FILE), which has no such bound", humanize.IBytes(maxValueStdin))
		}
		return l.r.Read(p)
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

func newValueCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "value",
		Short: "Store, read and drop computed values (outputs, intermediates, prepared inputs)",
		Long: `value works on the values cache: bytes a program computed and keyed by a
namespace and a key, kept in the same tiers as tensors (RAM, then the cache
directory). Programs use tier.Cache.Get, which computes a missing value once
however many callers ask; these commands store, read, list and drop values
from the shell. A namespace is the unit of dropping: "warm value drop NS"
makes all of its values unreachable at once, in every process that opens the
directory afterwards.`,
	}
	cmd.AddCommand(newValuePutCmd(g), newValueGetCmd(g), newValueDelCmd(g), newValueDropCmd(g), newValueLsCmd(g))
	return cmd
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}

func newValuePutCmd(g *globals) *cobra.Command {
	var ttl time.Duration
	var dtype, shape string
	cmd := &cobra.Command{
		Use:   "put [flags] NS KEY < FILE",
		Short: "Store stdin as the value of KEY in namespace NS",
		Long: `put reads stdin to its end and stores it as the value of KEY in namespace NS,
replacing what was there; it is in the cache directory when put returns. Its
memory does not grow with the value: a file (< FILE) is streamed in a chunk
at a time, whatever its size; a pipe, whose length is not known before its
end, is first copied to a temporary file (in the cache directory, else
$TMPDIR; at most 4 GiB), or sent as it is read to a warm serve. --ttl sets how long it lives (default: the namespace's, then
--ttl of warm itself, then forever). --dtype (F32, F16, BF16, F64, I8, ...,
as safetensors spells them) says the bytes are an array of that type,
little-endian, so that it is stored by the float-aware codec; the length
must be a whole number of elements, and --shape (e.g. 4,1024) must match it.`,
		Example: `  warm value put embeddings doc-42 < doc-42.f32
  warm value put --dtype F32 --shape 1,768 --ttl 24h embeddings doc-42 < doc-42.f32`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < 0 {
				return usageError{fmt.Errorf("--ttl: %v is negative", ttl)}
			}
			if dtype != "" && loader.DType(dtype).Size() == 0 {
				return usageError{fmt.Errorf("--dtype: %q is not an element type (F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U64, U32, U16, U8, BOOL)", dtype)}
			}
			o := &tier.PutOptions{TTL: ttl, DType: dtype}
			if shape != "" {
				for _, d := range strings.Split(shape, ",") {
					n, err := strconv.ParseUint(strings.TrimSpace(d), 10, 64)
					if err != nil {
						return usageError{fmt.Errorf("--shape: %q is not a list of sizes (e.g. 4,1024)", shape)}
					}
					o.Shape = append(o.Shape, n)
				}
				if dtype == "" {
					return usageError{fmt.Errorf("--shape needs --dtype")}
				}
			}
			return putValue(cmdContext(cmd), g, args[0], args[1], o)
		},
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the value lives (e.g. 24h); 0: the namespace's")
	cmd.Flags().StringVar(&dtype, "dtype", "", "element type of an array (F32, F16, BF16, ...): the float-aware codec")
	cmd.Flags().StringVar(&shape, "shape", "", "the array's shape, comma-separated (with --dtype)")
	return cmd
}

func newValueGetCmd(g *globals) *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "get [flags] NS KEY",
		Short: "Write the value of KEY in namespace NS to stdout",
		Long: `get writes the value's bytes to stdout. With -v it writes to stderr which tier
served it ("served-by: l1" or "l2"). A value that is not cached (never
stored, deleted, dropped or expired) is an error: exit status 1 and one line
on stderr.`,
		Example: `  warm value get embeddings doc-42 > doc-42.f32
  warm value get -v embeddings doc-42 | sha256sum`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.viaDaemonOr(func(d *client.Client) error {
				r, err := d.OpenValue(cmdContext(cmd), args[0], args[1])
				if err != nil {
					return err
				}
				defer r.Close()
				if verbose {
					fmt.Fprintf(g.stderr, "served-by: %s\n", r.ServedBy)
				}
				if n, err := io.Copy(g.stdout, r); err != nil {
					return err
				} else if r.Size >= 0 && n != r.Size {
					return fmt.Errorf("value %s: the daemon sent %d of %d bytes", errs.Quote(args[1]), n, r.Size)
				}
				return nil
			}, func(c *tier.Cache) error {
				// A reader: a value of any size goes out a chunk at a time.
				r, err := c.OpenValue(cmdContext(cmd), args[0], args[1])
				if err != nil {
					return err
				}
				defer r.Close()
				if verbose {
					fmt.Fprintf(g.stderr, "served-by: %s\n", r.ServedBy)
				}
				_, err = r.WriteTo(g.stdout)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "print the tier that served it on stderr")
	return cmd
}

func newValueDelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "del NS KEY",
		Short:   "Delete the value of KEY in namespace NS",
		Example: `  warm value del embeddings doc-42`,
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.viaDaemonOr(func(d *client.Client) error { return d.Delete(cmdContext(cmd), args[0], args[1]) },
				func(c *tier.Cache) error { return c.Delete(cmdContext(cmd), args[0], args[1]) })
		},
	}
}

func newValueDropCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "drop NS",
		Short: "Drop every value of namespace NS at once",
		Long: `drop makes every value of NS unreachable at once (the namespace moves to a new
epoch, a single record) and then removes their entries from the cache
directory; what is left of them is removed by "warm gc".`,
		Example: `  warm value drop "outputs@$(warm ls --json model.safetensors | jq -r .version)"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.viaDaemonOr(func(d *client.Client) error { return d.DropNamespace(cmdContext(cmd), args[0]) },
				func(c *tier.Cache) error { return c.DropNamespace(cmdContext(cmd), args[0]) })
		},
	}
}

// valueJSON is the contract of "warm value ls --json".
type valueJSON struct {
	Namespace    string    `json:"namespace"`
	Key          string    `json:"key"`
	DType        string    `json:"dtype,omitempty"`
	Shape        []uint64  `json:"shape,omitempty"`
	LogicalBytes uint64    `json:"logical_bytes"`
	StoredBytes  uint64    `json:"stored_bytes"`
	Written      time.Time `json:"written"`
	Expires      time.Time `json:"expires,omitzero"`
}

func newValueLsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls [flags] [NS]",
		Short: "List the values in the cache directory",
		Long: `ls lists the values the cache directory holds, of namespace NS or of all: a
table of namespace, key, bytes (logical and stored) and when each was written
and expires, or with --json one object per value: {"namespace", "key",
"dtype", "shape", "logical_bytes", "stored_bytes", "written", "expires"}.
Keys are printed quoted (Go syntax) in the table, as they may hold any byte.`,
		Example: `  warm value ls
  warm value ls --json embeddings | jq -r .key`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns := ""
			if len(args) == 1 {
				ns = args[0]
			}
			return g.withCache(func(c *tier.Cache) error {
				enc := json.NewEncoder(g.stdout)
				tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
				if !asJSON {
					fmt.Fprintln(tw, "NAMESPACE\tKEY\tBYTES\tSTORED\tWRITTEN\tEXPIRES")
				}
				var werr error
				err := c.Values(ns, func(v *tier.CachedValue) bool {
					if asJSON {
						werr = enc.Encode(valueJSON{Namespace: v.Namespace, Key: v.Key, DType: v.DType, Shape: v.Shape,
							LogicalBytes: v.LogicalBytes, StoredBytes: v.StoredBytes, Written: v.Written, Expires: v.Expires})
						return werr == nil
					}
					exp := "never"
					if !v.Expires.IsZero() {
						exp = v.Expires.Format(time.RFC3339)
					}
					fmt.Fprintf(tw, "%s\t%q\t%s\t%s\t%s\t%s\n", v.Namespace, v.Key, humanize.IBytes(v.LogicalBytes),
						humanize.IBytes(v.StoredBytes), v.Written.Format(time.RFC3339), exp)
					return true
				})
				if err == nil {
					err = werr
				}
				if !asJSON {
					if ferr := tw.Flush(); err == nil {
						err = ferr
					}
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per value")
	return cmd
}
