package tier_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/modelcache/modelcache/tier"
)

// Read a tensor through the cache: the first read comes from the file, the
// next from RAM; a new process with the same Dir reads it from local disk.
func ExampleCache_Tensor() {
	dir, err := os.MkdirTemp("", "modelcache-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c, err := tier.Open(&tier.Options{Dir: dir, MemoryBytes: 256 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx := context.Background()
	const model = "../testdata/models/posenet.bf16.safetensors"
	for range 2 {
		t, err := c.Tensor(ctx, model, "Const_61")
		if err != nil {
			log.Fatal(err)
		}
		// t.Bytes() is shared with the cache: read it, never write it.
		fmt.Println(t.DType, t.Shape, len(t.Bytes()), "bytes from", t.ServedBy)
	}
	// Output:
	// BF16 [1 1 384 32] 24576 bytes from source
	// BF16 [1 1 384 32] 24576 bytes from l1
}

// Warm a model into the cache directory ahead of time.
func ExampleCache_Warm() {
	dir, err := os.MkdirTemp("", "modelcache-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	c, err := tier.Open(&tier.Options{Dir: dir})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	res, err := c.Warm(context.Background(), "../testdata/models/posenet.bf16.safetensors")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Tensors, "tensors,", res.Written, "written,", res.LogicalBytes, "bytes")
	// Output:
	// 62 tensors, 62 written, 2516390 bytes
}

// Load every tensor of a model into buffers of one's own, as a loader that
// fills pinned memory or a GPU staging area does.
func ExampleModel_Load() {
	c, err := tier.Open(&tier.Options{MemoryBytes: 256 << 20})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	m, err := c.Model(ctx, "../testdata/models/posenet.bf16.safetensors")
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	arena := make([]byte, m.Bytes()) // one allocation for the whole model
	offsets := map[string]uint64{}
	var off uint64
	for _, ti := range m.Tensors() {
		offsets[ti.Name] = off
		off += ti.Bytes
	}
	res, err := m.Load(ctx, &tier.LoadOptions{
		Into: func(ti *tier.TensorInfo) ([]byte, error) {
			o := offsets[ti.Name]
			return arena[o : o+ti.Bytes : o+ti.Bytes], nil
		},
	}, func(t *tier.Tensor) error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Tensors, "tensors,", res.Bytes, "bytes, from the file:", res.Source)
	// Output:
	// 62 tensors, 2516390 bytes, from the file: 62
}
