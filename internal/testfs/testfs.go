// Package testfs gives tests real file systems that fill up or refuse
// writes: small tmpfs mounts (root only, as CI runs; skipped elsewhere with
// a message) and dd to fill them. Off Linux (no tmpfs) those tests are
// skipped.
package testfs

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Tmpfs mounts a tmpfs of size bytes on a new directory and unmounts it when
// the test ends. Extra mount options (e.g. "ro") are added to size.
func Tmpfs(t testing.TB, size int64, opts ...string) string {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("testfs: tmpfs mounts need Linux")
	}
	dir := t.TempDir()
	o := strings.Join(append([]string{fmt.Sprintf("size=%d", size)}, opts...), ",")
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", o, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", dir).Run() })
	return dir
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
