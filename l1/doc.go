// Package l1 is modelcache's in-RAM tier: a concurrency-safe cache bounded
// in bytes, not entries.
//
// Every entry is charged its size as given by the caller plus a fixed
// EntryOverhead for the cache's own bookkeeping, so the budget bounds real
// memory. An entry larger than a fraction of the budget (half, by default)
// is not admitted: it would only flush everything else.
//
// # Policies
//
// TinyLFU (adaptive W-TinyLFU, the default), S3FIFO, LRU, FIFO, LFU with
// aging and GDSF (GreedyDual-Size-Frequency), chosen by Options.Policy. Model
// loading reads every tensor once in file order, a scan that flushes an LRU;
// S3-FIFO and W-TinyLFU resist it. GDSF alone weighs an entry's size: it
// keeps many small tensors in place of one large one, which serves the most
// requests from a budget but fewer of the bytes; prefer it when a miss costs
// about the same whatever its size.
// docs/BENCHMARKS.md compares their hit ratios with golang-lru, ristretto and
// otter on public traces; docs/L1.md says how to choose one, and describes
// the read buffers and the deterministic mode (Options.Hash).
//
// l1 knows nothing of tensors or files; values are opaque and shared: the
// cache never copies or modifies them, and neither may its callers.
package l1
