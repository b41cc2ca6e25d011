//go:build !linux

package server

import (
	"net/http"

	"github.com/modelcache/modelcache/api"
)

// ShmReply is as on Linux; shared memory needs memfd and is not served here.
//
// Deprecated: use api.ShmReply.
type ShmReply = api.ShmReply

type shmCache struct{}

func newShmCache(int64, int64) *shmCache { return &shmCache{} }
func (*shmCache) close()                 {}

func (h *Handler) shmTensor(w http.ResponseWriter, r *http.Request) { fail(w, ErrShmUnsupported) }
func (h *Handler) shmModel(w http.ResponseWriter, r *http.Request)  { fail(w, ErrShmUnsupported) }
