package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/tier"
)

func newEvictCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "evict FILE...",
		Short: "Remove every cached tensor of the given model files",
		Long: `evict removes the cached entries of each file, of every version of it that
was cached. The file itself is not touched and need not exist any more.`,
		Example: `  warm evict old-model.safetensors`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withCache(func(c *tier.Cache) error {
				for _, f := range args {
					n, err := c.Evict(f)
					if err != nil {
						return err
					}
					fmt.Fprintf(g.stdout, "%s: %d entries removed\n", f, n)
				}
				return nil
			})
		},
	}
}
