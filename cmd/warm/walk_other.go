//go:build !unix

package main

import "os"

// Without inode numbers, links are followed to a bounded depth by the
// file system's own limits only.
func keyOf(os.FileInfo) (fileKey, bool) { return fileKey{}, false }
