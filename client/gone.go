package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/modelcache/modelcache/api"
)

// A daemon that goes away in the middle of an answer leaves the client
// with a short read (io.ErrUnexpectedEOF), io.EOF, or a reset connection.
// Those are ErrNoServer when the daemon no longer answers at all; when it
// does (it ended this one answer: a value replaced mid-stream, a stalled
// read), they say so.

// probeTimeout bounds the request that tells a daemon gone from one that
// ended an answer.
const probeTimeout = 2 * time.Second

// readErr is the error of reading an answer's body. what names it.
func (c *Client) readErr(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !brokenConn(err) {
		return fmt.Errorf("client: %s: %w", what, err)
	}
	if c.gone() {
		return fmt.Errorf("%w: %s: %w", ErrNoServer, what, err)
	}
	return fmt.Errorf("client: %s: the daemon ended its answer early: %w", what, err)
}

// brokenConn tells errors of a connection cut short.
func brokenConn(err error) bool {
	var op *net.OpError
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, net.ErrClosed) || errors.As(err, &op)
}

// gone tells whether the daemon no longer answers, on a new connection.
func (c *Client) gone() bool {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+api.PathStats, nil)
	if err != nil {
		return true
	}
	req.Close = true
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return true
	}
	resp.Body.Close()
	return false
}
