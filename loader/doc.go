// Package loader reads model files: safetensors (single files and sharded
// checkpoints), GGUF v2/v3, NumPy .npy and .npz, and any other file as one
// plain entry (see Source, Open, OpenSource and docs/FORMATS.md). It parses
// and validates their index of tensors, identifies the version of a file on
// disk (or digests its content), and reads tensor bytes through mmap.
//
// # Trust
//
// Model files come from outside and are not trusted. Every header is
// validated before any tensor is read: lengths and counts are checked
// against the bytes left before anything is allocated for them, headers are
// parsed strictly (no duplicate names or keys, no unknown fields, bounded
// nesting), and every tensor's byte range must match its dtype and shape and
// lie inside the file (safetensors: tile the data section; GGUF: aligned,
// without overlaps). Errors wrap errs.ErrInvalidModel
// and name the file and the defect.
//
// A file truncated while it is mapped would raise SIGBUS on access, which
// kills a Go program; reads from the mapping are guarded so that this is an
// error instead.
//
// # Identity
//
// Identity is the version of a file: path, size, modification time and
// inode. A cache keyed by it never serves bytes of an older version.
package loader
