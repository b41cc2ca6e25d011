package server

import (
	"github.com/modelcache/modelcache/internal/shmwire"
)

// Shared memory. GET /v1/shm/tensor on the unix socket answers with one
// message: a 4-byte length, a JSON ShmReply, and (on success) a file
// descriptor passed with SCM_RIGHTS: a sealed memfd holding the tensor's
// bytes, which the client maps read-only. The kernel counts the references:
// a mapping stays valid while the client holds it, whatever the daemon
// does, and is freed when the client unmaps it or dies. The daemon keeps
// the memfds of the tensors asked for last, within a byte budget, so that a
// tensor is copied into shared memory once, not per request.

// The wire types are api's, on every system; only Linux serves shared
// memory (shm_linux.go).

// ShmReply describes the descriptor that follows, or the error.
//
// Deprecated: the shared-memory message is private to package client and
// the daemon.
type ShmReply = shmwire.Reply

// ShmTensor is one tensor's place in a model's descriptor.
//
// Deprecated: the shared-memory message is private to package client and
// the daemon.
type ShmTensor = shmwire.Tensor

// DefaultShmPeerBytes is the default of Options.ShmPeerBytes.
const DefaultShmPeerBytes = DefaultShmBytes
