//go:build !linux

package server

import (
	"fmt"
	"net/http"

	"github.com/modelcache/modelcache/errs"
)

// errShmUnsupported: shared memory needs Linux (memfd, SCM_RIGHTS); the
// daemon refuses /v1/shm/* elsewhere with it.
var errShmUnsupported = fmt.Errorf("server: shared memory needs Linux (memfd): %w", errs.ErrUnsupported)

// shmCache: shared memory needs memfd (Linux); the handlers refuse.
type shmCache struct{}

func newShmCache(int64, int64) *shmCache { return &shmCache{} }
func (*shmCache) close()                 {}

func (h *Handler) shmTensor(w http.ResponseWriter, r *http.Request) { fail(w, errShmUnsupported) }
func (h *Handler) shmModel(w http.ResponseWriter, r *http.Request)  { fail(w, errShmUnsupported) }
