// Package shmwire is the message of the shared-memory transport (Linux, the
// unix socket only), private to package client and the daemon. GET
// api.PathShmTensor and api.PathShmModel are answered with one message: a
// 4-byte little-endian length, a JSON Reply, and (on success) a sealed memfd
// passed with SCM_RIGHTS holding the bytes, which the client maps read-only.
package shmwire

// Reply describes the descriptor that follows, or the error.
type Reply struct {
	DType    string   `json:"dtype,omitempty"`
	Shape    []uint64 `json:"shape,omitempty"`
	Size     int64    `json:"size"`
	ServedBy string   `json:"served_by,omitempty"`
	// Tensors places each tensor of a whole model in the descriptor.
	Tensors  []Tensor `json:"tensors,omitempty"`
	Error    string   `json:"error,omitempty"`
	Sentinel string   `json:"sentinel,omitempty"`
	// HTTP, with an error: read the bytes over HTTP instead (the peer's
	// server.Options.ShmPeerBytes is used up).
	HTTP bool `json:"http,omitempty"`
}

// Tensor is one tensor's place in a model's descriptor.
type Tensor struct {
	Name   string   `json:"name"`
	DType  string   `json:"dtype"`
	Shape  []uint64 `json:"shape"`
	Offset int64    `json:"offset"`
	Size   int64    `json:"size"`
}
