package pagecache

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported: Evict and Resident work on this system.
const Supported = true

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
