// Package loader reads model files: it parses and validates their index of
// tensors, identifies the version of a file on disk, and reads tensor bytes
// through mmap.
//
// # Trust
//
// Model files come from outside and are not trusted. Every header is
// validated before any tensor is read: lengths are checked against the file
// before anything is allocated, JSON is parsed strictly (no duplicate names,
// no unknown fields, no nesting beyond the format's own), and every tensor's
// byte range must match its dtype and shape, lie inside the file, and tile
// the data section without gaps or overlaps. Errors wrap errs.ErrInvalidModel
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
