package server

import (
	"fmt"

	"github.com/modelcache/modelcache/errs"
)

// Shared memory. GET /v1/shm/tensor on the unix socket answers with one
// message: a 4-byte length, a JSON ShmReply, and (on success) a file
// descriptor passed with SCM_RIGHTS: a sealed memfd holding the tensor's
// bytes, which the client maps read-only. The kernel counts the references:
// a mapping stays valid while the client holds it, whatever the daemon
// does, and is freed when the client unmaps it or dies. The daemon keeps
// the memfds of the tensors asked for last, within a byte budget, so that a
// tensor is copied into shared memory once, not per request.

// These are the wire types of shared memory on every system, so that
// clients build everywhere; only Linux serves it (shm_linux.go).

// ShmReply describes the descriptor that follows, or the error.
type ShmReply struct {
	DType    string   `json:"dtype,omitempty"`
	Shape    []uint64 `json:"shape,omitempty"`
	Size     int64    `json:"size"`
	ServedBy string   `json:"served_by,omitempty"`
	// Tensors places each tensor of a whole model in the descriptor.
	Tensors  []ShmTensor `json:"tensors,omitempty"`
	Error    string      `json:"error,omitempty"`
	Sentinel string      `json:"sentinel,omitempty"`
	// HTTP, with an error: read the bytes over HTTP instead (the peer's
	// ShmPeerBytes is used up).
	HTTP bool `json:"http,omitempty"`
}

// ShmTensor is one tensor's place in a model's descriptor.
type ShmTensor struct {
	Name   string   `json:"name"`
	DType  string   `json:"dtype"`
	Shape  []uint64 `json:"shape"`
	Offset int64    `json:"offset"`
	Size   int64    `json:"size"`
}

// DefaultShmPeerBytes is the default of Options.ShmPeerBytes.
const DefaultShmPeerBytes = DefaultShmBytes

// ErrShmPeerLimit: the peer's user made the daemon create its share of
// shared memory; the bytes come over HTTP.
var ErrShmPeerLimit = fmt.Errorf("server: shared memory: this user's processes hold their share (Options.ShmPeerBytes); read over HTTP: %w", errs.ErrTooLarge)
