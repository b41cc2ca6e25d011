//go:build !linux

package server

import (
	"net/http"
)

// ShmReply is as on Linux; shared memory needs memfd and is not served here.
type ShmReply struct {
	DType    string   `json:"dtype,omitempty"`
	Shape    []uint64 `json:"shape,omitempty"`
	Size     int64    `json:"size"`
	ServedBy string   `json:"served_by,omitempty"`
	Error    string   `json:"error,omitempty"`
	Sentinel string   `json:"sentinel,omitempty"`
}

type shmCache struct{}

func newShmCache(int64, int64) *shmCache { return &shmCache{} }
func (*shmCache) close()                 {}

func (h *Handler) shmTensor(w http.ResponseWriter, r *http.Request) { fail(w, ErrShmUnsupported) }
func (h *Handler) shmModel(w http.ResponseWriter, r *http.Request)  { fail(w, ErrShmUnsupported) }
