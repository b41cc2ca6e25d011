package client

import (
	"context"
	"errors"
	"net/url"

	"github.com/modelcache/modelcache/api"
	"github.com/modelcache/modelcache/internal/shmwire"
)

// Mapped is a tensor in shared memory the daemon handed out: its bytes are
// mapped read-only into this process, with no copy. They stay valid, and
// unchanged, until Close, whatever the daemon does (even if it exits): the
// kernel keeps the memory while a process maps it.
type Mapped struct {
	Name, DType, ServedBy string
	Shape                 []uint64
	data                  []byte
	heap                  bool // read over HTTP, not mapped
}

// Bytes returns the tensor's bytes, read-only: writing to them faults.
func (m *Mapped) Bytes() []byte { return m.data }

// Close unmaps the bytes; Bytes must not be used after.
func (m *Mapped) Close() error {
	if len(m.data) == 0 || m.heap {
		m.data = nil
		return nil
	}
	err := unmap(m.data)
	m.data = nil
	return err
}

// MapTensor maps one tensor of the model at path from the daemon's shared
// memory: the bytes do not go through the socket (a file descriptor does,
// with SCM_RIGHTS). It needs a unix socket to the daemon.
//
// When the daemon refuses this process's user more shared memory
// (server.Options.ShmPeerBytes), the bytes come over HTTP into this
// process's memory instead: the same answer, with a copy.
func (c *Client) MapTensor(ctx context.Context, path, name string) (*Mapped, error) {
	path, err := absPath(path)
	if err != nil {
		return nil, err
	}
	reply, data, err := c.shm(ctx, api.PathShmTensor+"?"+url.Values{"path": {path}, "name": {name}}.Encode())
	if errors.Is(err, errOverHTTP) {
		t, err := c.Tensor(ctx, path, name)
		if err != nil {
			return nil, err
		}
		return &Mapped{Name: name, DType: t.DType, Shape: t.Shape, ServedBy: t.ServedBy, data: t.Data, heap: true}, nil
	}
	if err != nil {
		return nil, err
	}
	return &Mapped{Name: name, DType: reply.DType, Shape: reply.Shape, ServedBy: reply.ServedBy, data: data}, nil
}

// MappedModel is every tensor of a model in one mapping of the daemon's
// shared memory, valid until Close as Mapped is.
type MappedModel struct {
	Tensors []shmwire.Tensor // in storage order, with their places
	data    []byte
	heap    bool // read over HTTP, not mapped
}

// Tensor returns the named tensor's bytes, read-only.
func (m *MappedModel) Tensor(name string) ([]byte, bool) {
	for _, t := range m.Tensors {
		if t.Name == name {
			return m.data[t.Offset : t.Offset+t.Size], true
		}
	}
	return nil, false
}

// Bytes returns every tensor's bytes, in storage order.
func (m *MappedModel) Bytes() []byte { return m.data }

// Close unmaps the model; its bytes must not be used after.
func (m *MappedModel) Close() error {
	if len(m.data) == 0 || m.heap {
		m.data = nil
		return nil
	}
	err := unmap(m.data)
	m.data = nil
	return err
}

// MapModel maps every tensor of the model at path in one request and one
// mapping: the daemon copies the model into shared memory once and hands
// the same memory to every process that asks.
func (c *Client) MapModel(ctx context.Context, path string) (*MappedModel, error) {
	path, err := absPath(path)
	if err != nil {
		return nil, err
	}
	reply, data, err := c.shm(ctx, api.PathShmModel+"?"+url.Values{"path": {path}}.Encode())
	if errors.Is(err, errOverHTTP) {
		return c.modelOverHTTP(ctx, path)
	}
	if err != nil {
		return nil, err
	}
	return &MappedModel{Tensors: reply.Tensors, data: data}, nil
}

// modelOverHTTP reads a whole model as MapModel lays it out, over HTTP.
func (c *Client) modelOverHTTP(ctx context.Context, path string) (*MappedModel, error) {
	m, err := c.Model(ctx, path)
	if err != nil {
		return nil, err
	}
	mm := &MappedModel{data: make([]byte, 0, m.Bytes), heap: true}
	err = c.Load(ctx, path, 0, func(t *Tensor) error {
		mm.Tensors = append(mm.Tensors, shmwire.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Offset: int64(len(mm.data)), Size: int64(len(t.Data))})
		mm.data = append(mm.data, t.Data...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return mm, nil
}

// errOverHTTP: the daemon wants the bytes read over HTTP
// (shmwire.Reply.HTTP).
var errOverHTTP = errors.New("client: shared memory refused: read over HTTP")

// LoadMapped maps every tensor of the model at path from the daemon's
// shared memory, parallel at once (default 4), and calls each with them in
// storage order. each owns the mapping: it must Close it (now, or later).
func (c *Client) LoadMapped(ctx context.Context, path string, parallel int, each func(*Mapped) error) error {
	m, err := c.Model(ctx, path)
	if err != nil {
		return err
	}
	return inOrder(ctx, len(m.Tensors), parallel, func(ctx context.Context, i int) (*Mapped, error) {
		return c.MapTensor(ctx, path, m.Tensors[i].Name)
	}, each, func(mp *Mapped) { mp.Close() })
}
