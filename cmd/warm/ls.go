package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/tier"
)

// lsTensor and lsModel are the contract of "warm ls --json".
type lsTensor struct {
	Name         string   `json:"name"`
	DType        string   `json:"dtype"`
	Shape        []uint64 `json:"shape"`
	LogicalBytes uint64   `json:"logical_bytes"`
	StoredBytes  uint64   `json:"stored_bytes"`
}

type lsModel struct {
	File         string     `json:"file"`
	Version      string     `json:"version"`
	Current      bool       `json:"current"` // the file on disk is still this version
	Tensors      int        `json:"tensors"`
	LogicalBytes uint64     `json:"logical_bytes"`
	StoredBytes  uint64     `json:"stored_bytes"`
	TensorList   []lsTensor `json:"tensor_list,omitempty"`
}

func newLsCmd(g *globals) *cobra.Command {
	var asJSON, tensors bool
	cmd := &cobra.Command{
		Use:   "ls [flags]",
		Short: "List cached models (and with -t their tensors) with logical and stored sizes",
		Long: `ls lists the model files the cache holds tensors of, one line per file
version, with the number of tensors and their logical (uncompressed) and stored
(encoded) bytes. A version whose file has since changed or gone is marked stale;
"warm gc" removes those. With --json it prints one JSON array of
{"file", "version", "current", "tensors", "logical_bytes", "stored_bytes",
"tensor_list"}; "tensor_list" (with -t) holds {"name", "dtype", "shape",
"logical_bytes", "stored_bytes"} per tensor. To list the tensors of a file
that is not cached, without caching it: warm tensors FILE.`,
		Example: `  warm ls
  warm ls -t
  warm ls --json | jq '.[] | select(.current | not) | .file'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("warm ls lists what the cache holds and takes no arguments; to list the tensors of a file without caching it: warm tensors %s", strings.Join(args, " "))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var models []*lsModel
			err := g.withCache(func(c *tier.Cache) error {
				byKey := map[string]*lsModel{}
				return c.Cached(func(t *tier.CachedTensor) bool {
					k := t.Path + "\x00" + t.Version
					m := byKey[k]
					if m == nil {
						m = &lsModel{File: t.Path, Version: t.Version}
						if id, err := loader.Stat(t.Path); err == nil {
							m.Current = id.String() == t.Path+"\x00"+t.Version
						}
						byKey[k] = m
						models = append(models, m)
					}
					m.Tensors++
					m.LogicalBytes += t.LogicalBytes
					m.StoredBytes += t.StoredBytes
					if tensors {
						m.TensorList = append(m.TensorList, lsTensor{t.Tensor, t.DType, t.Shape, t.LogicalBytes, t.StoredBytes})
					}
					return true
				})
			})
			if err != nil {
				return err
			}
			if asJSON {
				if models == nil {
					models = []*lsModel{}
				}
				return json.NewEncoder(g.stdout).Encode(models)
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tTENSORS\tLOGICAL\tSTORED\tRATIO\tSTATE")
			for _, m := range models {
				state := "current"
				if !m.Current {
					state = "stale"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.3f\t%s\n", m.File, m.Tensors, humanize.IBytes(m.LogicalBytes),
					humanize.IBytes(m.StoredBytes), ratio(m.StoredBytes, m.LogicalBytes), state)
				for _, t := range m.TensorList {
					fmt.Fprintf(tw, "  %s\t%s %v\t%s\t%s\t%.3f\t\n", t.Name, t.DType, t.Shape,
						humanize.IBytes(t.LogicalBytes), humanize.IBytes(t.StoredBytes), ratio(t.StoredBytes, t.LogicalBytes))
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array")
	cmd.Flags().BoolVarP(&tensors, "tensors", "t", false, "list each file's tensors too")
	return cmd
}

func ratio(stored, logical uint64) float64 {
	if logical == 0 {
		return 0
	}
	return float64(stored) / float64(logical)
}
