// Package testfs gives tests real file systems that fill up or refuse
// writes: small tmpfs mounts (root only, as CI runs; skipped elsewhere with
// a message) and dd to fill them.
package testfs

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size bytes on a new directory and unmounts it when
// the test ends. Extra mount options (e.g. "ro") are added to size.
func Tmpfs(t testing.TB, size int64, opts ...string) string {
	t.Helper()
	dir := t.TempDir()
	o := strings.Join(append([]string{fmt.Sprintf("size=%d", size)}, opts...), ",")
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", o, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
}

// Free is the space left on dir's file system for an unprivileged writer.
func Free(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	return int64(st.Bavail) * st.Bsize
}

// FillTo writes a file under dir with dd until at most left bytes are free
// on its file system, and returns the file's path (remove it to make room).
func FillTo(t testing.TB, dir string, left int64) string {
	t.Helper()
	p := filepath.Join(dir, "fill")
	if n := Free(t, dir) - left; n > 0 {
		out, err := exec.Command("dd", "if=/dev/zero", "of="+p, "bs=4096", fmt.Sprintf("count=%d", n/4096), "status=none").CombinedOutput()
		if err != nil {
			t.Fatalf("dd: %v: %s", err, out)
		}
	}
	if free := Free(t, dir); free > left+4096 {
		t.Fatalf("filled %s to %d bytes free, wanted %d", dir, free, left)
	}
	return p
}
