// Package pagecache drops files from the operating system's page cache and
// measures how much of them is resident, so that benchmarks can measure
// truly cold reads. It works on Linux; elsewhere Evict and Resident return
// an error that wraps errs.ErrUnsupported.
package pagecache

import (
	"fmt"
	"io/fs"
	"path/filepath"
)

// files lists the regular files under root (root itself if it is a file).
func files(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// EvictAll evicts every regular file under root.
func EvictAll(root string) error {
	paths, err := files(root)
	if err != nil {
		return fmt.Errorf("pagecache: %w", err)
	}
	for _, p := range paths {
		if err := Evict(p); err != nil {
			return err
		}
	}
	return nil
}

// ResidentFraction is the share of the bytes under root that is in the page
// cache, from 0 to 1.
func ResidentFraction(root string) (float64, error) {
	paths, err := files(root)
	if err != nil {
		return 0, fmt.Errorf("pagecache: %w", err)
	}
	var res, total int64
	for _, p := range paths {
		r, s, err := Resident(p)
		if err != nil {
			return 0, err
		}
		res += r
		total += s
	}
	if total == 0 {
		return 0, nil
	}
	return float64(res) / float64(total), nil
}
