package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/tier"
)

func newGetCmd(g *globals) *cobra.Command {
	var verbose, requireL2 bool
	var repeat int
	cmd := &cobra.Command{
		Use:   "get [flags] FILE TENSOR",
		Short: "Write a tensor's raw bytes to stdout, through the cache",
		Long: `get reads one tensor through the cache (RAM, then the cache directory, then
the file itself) and writes its raw bytes (little-endian, row-major) to
stdout. FILE is any model warm accepts; TENSOR is a safetensors or GGUF tensor
name, a .npz member without ".npy", a .npy file's name without ".npy", or "-"
for a plain file's single entry. With -v it writes to stderr which tier
served each read: "served-by: l1", "l2", "source" or "shared" (joined another
reader's load of the same tensor).

A cache directory that cannot be used (held by another process, read-only,
on a full disk) does not stop get: it warns once on stderr and reads the
model file itself. --require-l2 makes that an error instead.`,
		Example: `  warm get model.safetensors lm_head.weight > head.bin
  warm get -v model.safetensors lm_head.weight | sha256sum
  warm get -v -n 2 model.safetensors lm_head.weight > /dev/null   # second read from l1
  warm get llama.gguf blk.0.attn_q.weight > q.bin
  warm get /models/Llama-3-8B model.embed_tokens.weight > embed.bin
  warm get inputs.npz tokens > tokens.bin
  warm get tokenizer.json - | jq .model.type`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if repeat < 1 {
				return usageError{fmt.Errorf("-n must be at least 1, got %d", repeat)}
			}
			g.optionalL2 = !requireL2
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return g.viaDaemonOr(func(d *client.Client) error {
				for k := range repeat {
					served, err := getFromDaemon(ctx, d, args[0], args[1], g.stdout, k == repeat-1)
					if err != nil {
						return err
					}
					if verbose {
						fmt.Fprintf(g.stderr, "served-by: %s\n", served)
					}
				}
				return nil
			}, func(c *tier.Cache) error {
				for k := range repeat {
					last := k == repeat-1
					served, err := getOnce(ctx, c, args[0], args[1], g.stdout, last)
					if err != nil {
						return err
					}
					if verbose {
						fmt.Fprintf(g.stderr, "served-by: %s\n", served)
					}
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "write which tier served each read to stderr")
	cmd.Flags().BoolVar(&requireL2, "require-l2", false, "fail if the cache directory cannot be used, instead of reading the file directly")
	cmd.Flags().IntVarP(&repeat, "count", "n", 1, "read the tensor this many times (later reads show the RAM tier)")
	return cmd
}

// getOnce reads the tensor through the cache and, if write, writes it to
// out. A tensor larger than tier.StreamAbove is streamed a chunk at a time (an
// 8 GiB file is never in memory whole); smaller ones are read whole, which
// keeps them in RAM for the next read.
func getOnce(ctx context.Context, c *tier.Cache, path, name string, out io.Writer, write bool) (tier.Tier, error) {
	m, err := c.Model(ctx, path)
	if err != nil {
		return 0, err
	}
	defer m.Close()
	info, ok := m.Info(name)
	if ok && info.Bytes > tier.StreamAbove {
		r, err := m.OpenTensor(ctx, name)
		if err != nil {
			return 0, err
		}
		defer r.Close()
		if !write {
			out = io.Discard
		}
		if _, err := r.WriteTo(out); err != nil {
			return 0, err
		}
		return r.ServedBy, nil
	}
	t, err := m.Tensor(ctx, name)
	if err != nil {
		return 0, err
	}
	if write {
		if _, err := out.Write(t.Bytes()); err != nil {
			return 0, fmt.Errorf("writing to stdout: %w", err)
		}
	}
	return t.ServedBy, nil
}

// getFromDaemon reads the tensor through a warm serve daemon, streaming it
// to out if write.
func getFromDaemon(ctx context.Context, d *client.Client, path, name string, out io.Writer, write bool) (string, error) {
	// The client makes path absolute (the daemon's working directory is
	// not ours) unless it is a name (resolve.IsName).
	s, err := d.OpenTensor(ctx, path, name)
	if err != nil {
		return "", err
	}
	defer s.Close()
	if !write {
		out = io.Discard
	}
	if _, err := io.Copy(out, s); err != nil {
		return "", err
	}
	return s.ServedBy, nil
}
