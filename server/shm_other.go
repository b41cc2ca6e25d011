//go:build !linux

package server

import (
	"net/http"
)

// shmCache: shared memory needs memfd (Linux); the handlers refuse.
type shmCache struct{}

func newShmCache(int64, int64) *shmCache { return &shmCache{} }
func (*shmCache) close()                 {}

func (h *Handler) shmTensor(w http.ResponseWriter, r *http.Request) { fail(w, errShmUnsupported) }
func (h *Handler) shmModel(w http.ResponseWriter, r *http.Request)  { fail(w, errShmUnsupported) }
