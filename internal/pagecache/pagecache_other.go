//go:build !linux

package pagecache

import (
	"fmt"

	"github.com/modelcache/modelcache/errs"
)

// Supported: Evict and Resident work on this system.
const Supported = false

// errNeedsLinux is what Evict and Resident return off Linux: they rest on
// posix_fadvise(POSIX_FADV_DONTNEED) and mincore as Linux implements them.
var errNeedsLinux = fmt.Errorf("pagecache: page-cache eviction and residency need Linux: %w", errs.ErrUnsupported)

// Evict is not available on this system.
func Evict(string) error { return errNeedsLinux }

// Resident is not available on this system.
func Resident(string) (resident, size int64, err error) { return 0, 0, errNeedsLinux }
