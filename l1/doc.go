// Package l1 is modelcache's in-RAM tier: a concurrency-safe cache bounded
// in bytes, not entries.
//
// Every entry is charged its size as given by the caller plus a fixed
// EntryOverhead for the cache's own bookkeeping, so the budget bounds real
// memory. An entry larger than the budget is not admitted: it would only
// flush everything else. Eviction is least recently used.
//
// l1 knows nothing of tensors or files; values are opaque and shared: the
// cache never copies or modifies them, and neither may its callers.
package l1
