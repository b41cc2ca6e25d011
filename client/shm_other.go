//go:build !linux

package client

import (
	"context"
	"fmt"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/internal/shmwire"
)

// shm: shared memory needs memfd and descriptor passing as Linux has them;
// MapTensor, MapModel and LoadMapped say so, and Tensor, Model and Load
// read the same bytes over HTTP.
func (c *Client) shm(context.Context, string) (*shmwire.Reply, []byte, error) {
	return nil, nil, fmt.Errorf("client: shared memory needs Linux (memfd); read with Tensor or Load: %w", errs.ErrUnsupported)
}

// unmap: nothing is ever mapped here.
func unmap([]byte) error { return nil }
