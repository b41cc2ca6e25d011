package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

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
			return g.withCache(func(c *tier.Cache) error {
				var out []byte
				for range repeat {
					t, err := c.Tensor(ctx, args[0], args[1])
					if err != nil {
						return err
					}
					if verbose {
						fmt.Fprintf(g.stderr, "served-by: %s\n", t.ServedBy)
					}
					out = t.Bytes()
				}
				if _, err := g.stdout.Write(out); err != nil {
					return fmt.Errorf("writing to stdout: %w", err)
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
