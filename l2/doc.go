// Package l2 is modelcache's durable local tier: entries encoded by
// package serialize, stored in a Badger database in one directory.
//
// # Layout
//
// Each entry is a meta record under "m" + key, holding a random entry id,
// the time it was written and the serialize header, and one record per chunk
// under "c" + id + chunk index. Chunks are written first and the meta record
// last, in its own transaction: the meta record is the commit point, so a
// crash mid-write leaves at worst chunks that no meta record names, which
// Open sweeps away. Replacing an entry writes the new chunks under a new id,
// so a reader never mixes chunks of two versions.
//
// # Integrity
//
// Every read checks the header checksum and each chunk's CRC-32C. A mismatch
// is reported as errs.ErrCorrupt and the entry is dropped; wrong bytes are
// never returned.
//
// # Budget
//
// With Options.MaxBytes set, a Put that takes the stored bytes over the budget
// evicts the entries read or written least recently. The LRU order and the
// totals are kept in Badger beside the entries, so that an Open after a clean
// Close reads none of them; after a crash Open reads every meta record to
// recount and rebuild them. Space in Badger's value log is reclaimed by its
// garbage collection.
//
// # Exclusive use
//
// A directory is used by one process at a time. Open takes a lock without
// waiting and fails with errs.ErrLocked naming the directory if another
// process holds it.
package l2
