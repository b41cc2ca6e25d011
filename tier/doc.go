// Package tier is modelcache's public entry point: a Cache that serves the
// tensors of model files from RAM (L1), from a compressed store on local disk
// (L2), or from the file itself, and promotes what it reads up the tiers.
//
// # Reading
//
//	c, err := tier.Open(&tier.Options{Dir: "/var/cache/modelcache", MemoryBytes: 4 << 30})
//	if err != nil { ... }
//	defer c.Close()
//	t, err := c.Tensor(ctx, "model.safetensors", "lm_head.weight")
//	if err != nil { ... }
//	use(t.DType, t.Shape, t.Bytes()) // t.Bytes() is shared: never write to it
//
// A tensor is keyed by the version of its file (path, size, modification and
// status-change times, device and inode) and its name, so a file changed on disk is never served from
// entries of its old version; those become unreachable and are reclaimed by
// eviction.
//
// Concurrent reads of one missing tensor load it once; the others wait for
// that load (or for their context). A tensor read from the file is put in L1
// at once and written to L2 in the background through a queue bounded in
// bytes: readers never wait for disk writes, and when the queue is full the
// write is dropped and counted, never blocked on.
//
// A damaged L2 entry is dropped, counted and reloaded from the file; a
// failing L2 degrades to reading the file. Wrong bytes are never returned.
//
// # Loading a whole model
//
// Cache.Model opens one version of a model and holds it; Model.Load (or
// Model.All) streams every tensor through the tiers with reads ahead in
// storage order, bytes in flight bounded by LoadOptions.MaxInFlight, and
// each tensor decoded or read straight into the caller's buffer when
// LoadOptions.Into gives one. Model.OpenTensor reads a tensor of any size
// piecewise (io.ReaderAt, io.WriterTo). See docs/LOADING.md.
//
//	m, err := c.Model(ctx, "/models/Llama-3-8B/") // or hf:ORG/NAME, ollama:NAME
//	if err != nil { ... }
//	defer m.Close()
//	_, err = m.Load(ctx, &tier.LoadOptions{Into: alloc}, func(t *tier.Tensor) error {
//		return upload(t.Name, t.Bytes())
//	})
//
// # Warming
//
// Warm writes every tensor of a file to L2 ahead of time, skipping those
// already there, so that later processes start from local disk.
//
// # Values
//
// The same tiers cache what a program computes: outputs, intermediate
// results, prepared inputs, as values under a namespace and a key. Get
// returns a cached value or calls fill once for every caller of a missing
// key; DropNamespace drops a namespace in O(1) by moving it to a new epoch;
// NamespaceFor names a namespace after one version of a model. See
// docs/VALUES.md.
//
//	v, err := c.Get(ctx, tier.NamespaceFor(m, "outputs"), prompt, func(ctx context.Context) ([]byte, error) {
//		return run(ctx, prompt)
//	})
//
// # Measures
//
// Every request is counted by the tier that served it and timed (every
// request past L1, one L1 hit in 64): Stats gives, for tensors, values and
// each namespace, hit rates per tier, latency histograms, Tc, Tr and the
// average access time HR·Tc + (1 − HR)·(Tc + Tr) beside the mean measured;
// NewCollector exports them to Prometheus.
package tier
