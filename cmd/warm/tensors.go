package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/resolve"
)

// tensorsFile and tensorsEntry are the contract of "warm tensors --json".
type tensorsFile struct {
	File    string         `json:"file"`
	Format  string         `json:"format"`
	Bytes   uint64         `json:"bytes"`
	Tensors []tensorsEntry `json:"tensors"`
}

type tensorsEntry struct {
	Name  string   `json:"name"`
	DType string   `json:"dtype"`
	Shape []uint64 `json:"shape"`
	Bytes uint64   `json:"bytes"`
}

func newTensorsCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tensors [flags] FILE...",
		Short: "List a model's tensors (name, dtype, shape, bytes) without caching it",
		Long: `tensors reads each model's header (a safetensors, GGUF, .npy or .npz file,
a sharded checkpoint, an hf: or ollama: name; any other file is one tensor
"-") and lists its tensors in storage order: name, dtype, shape and bytes.
Nothing is cached and the cache directory is not opened. With --json it
prints one object per model: {"file", "format", "bytes", "tensors": [{"name",
"dtype", "shape", "bytes"}]}.`,
		Example: `  warm tensors model.safetensors
  warm tensors --json llama.gguf | jq -r '.tensors[].name'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := false
			for _, a := range args {
				tf, err := listTensors(a)
				if err != nil {
					fmt.Fprintf(g.stderr, "warm: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
					failed = true
					continue
				}
				if asJSON {
					if err := json.NewEncoder(g.stdout).Encode(tf); err != nil {
						return err
					}
					continue
				}
				fmt.Fprintf(g.stdout, "%s: %s, %d tensors, %s\n", tf.File, tf.Format, len(tf.Tensors), humanize.IBytes(tf.Bytes))
				tw := tabwriter.NewWriter(g.stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "  NAME\tDTYPE\tSHAPE\tBYTES")
				for _, t := range tf.Tensors {
					fmt.Fprintf(tw, "  %s\t%s\t%v\t%d\n", t.Name, t.DType, t.Shape, t.Bytes)
				}
				if err := tw.Flush(); err != nil {
					return err
				}
			}
			if failed {
				return errReported
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per model")
	return cmd
}

// listTensors reads the header of the model name names.
func listTensors(name string) (*tensorsFile, error) {
	p, err := resolve.Name(name)
	if err != nil {
		return nil, err
	}
	src, err := loader.OpenSource(p)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	tf := &tensorsFile{File: src.Path(), Format: string(src.Format()), Tensors: []tensorsEntry{}}
	for _, t := range src.Tensors() {
		shape := t.Shape
		if shape == nil {
			shape = []uint64{}
		}
		tf.Tensors = append(tf.Tensors, tensorsEntry{Name: t.Name, DType: string(t.DType), Shape: shape, Bytes: t.Length})
		tf.Bytes += t.Length
	}
	return tf, nil
}
