//go:build linux

// Package pagecache drops files from the operating system's page cache and
// measures how much of them is resident, so that benchmarks can measure
// truly cold reads.
package pagecache

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Evict writes back and drops the cached pages of the file at path
// (fdatasync, then posix_fadvise POSIX_FADV_DONTNEED). Pages that another
// process has mapped may stay.
func Evict(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		// Read-only files (shared test data) can still be advised.
		if f, err = os.Open(path); err != nil {
			return fmt.Errorf("pagecache: %w", err)
		}
	} else if err := unix.Fdatasync(int(f.Fd())); err != nil {
		f.Close()
		return fmt.Errorf("pagecache: fdatasync %s: %w", path, err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("pagecache: fadvise %s: %w", path, err)
	}
	return nil
}

// Resident returns how many bytes of the file at path are in the page cache
// (by mincore) and its size.
func Resident(path string) (resident, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("pagecache: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, fmt.Errorf("pagecache: %w", err)
	}
	size = fi.Size()
	if size == 0 {
		return 0, 0, nil
	}
	data, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, 0, fmt.Errorf("pagecache: mmap %s: %w", path, err)
	}
	defer unix.Munmap(data)
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return 0, 0, fmt.Errorf("pagecache: mincore %s: %w", path, errno)
	}
	for i, v := range vec {
		if v&1 != 0 {
			resident += min(page, size-int64(i)*page)
		}
	}
	return resident, size, nil
}

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
