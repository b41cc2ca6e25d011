package client

import "context"

// Reader is what a model-loading program needs of modelcache, served by
// the cache in this process or by a warm serve daemon (*Client): the
// program chooses by configuration, not by code. Package client/local
// opens one either way (local.Open) and serves it from a cache in this
// process (local.New); it is apart so that a program that only dials links
// no cache engine.
type Reader interface {
	// Model lists the tensors of the model at path.
	Model(ctx context.Context, path string) (*Model, error)
	// Tensor reads one tensor.
	Tensor(ctx context.Context, path, name string) (*Tensor, error)
	// Load reads every tensor in storage order, parallel at once.
	Load(ctx context.Context, path string, parallel int, each func(*Tensor) error) error
	// Get reads a value (errs.ErrNotFound when absent); Put, Delete and
	// DropNamespace change them.
	Get(ctx context.Context, ns, key string) (*Value, error)
	Put(ctx context.Context, ns, key string, b []byte, o *PutOptions) error
	Delete(ctx context.Context, ns, key string) error
	DropNamespace(ctx context.Context, ns string) error
	// Stats are the cache's.
	Stats(ctx context.Context) (*Stats, error)
	Close() error
}

var _ Reader = (*Client)(nil)
