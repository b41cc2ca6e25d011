// Package client talks to a warm serve daemon on this machine: the cache
// directory is one process's (Badger locks it), and every other process
// reads through the daemon. Errors carry the errs sentinels the daemon's
// cache returned, so errors.Is(err, errs.ErrNotFound) works as in process.
//
//	c, err := client.Dial("/run/modelcache/modelcache.sock")
//	t, err := c.Tensor(ctx, "/models/llama/model.safetensors", "lm_head.weight")
//	v, err := c.Get(ctx, "outputs", key)
//
// FromEnvironment dials $MODELCACHE_SERVER when it is set, so that a
// program switches between the in-process cache and the daemon by
// configuration (package client/local serves the same Reader from a cache
// in this process).
//
// The package links no cache engine (no tier, server, Badger, go-redis or
// Prometheus): the wire types it shares with the daemon are package api's.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/modelcache/modelcache/api"
	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/resolve"
)

// ErrNoServer: no daemon answers at the address.
var ErrNoServer = errors.New("client: no warm serve daemon answers")

// Client is a connection pool to one daemon. It is safe for concurrent use.
type Client struct {
	http   *http.Client
	base   string // http://modelcache or http(s)://host:port
	token  string
	socket string // the unix socket, if dialed on one
}

// Dial connects to the daemon at addr: a unix socket path, or
// http://host:port (then token is sent as a bearer token, if set). It
// checks that the daemon answers.
func Dial(addr string) (*Client, error) { return DialToken(addr, "") }

// DialToken is Dial with a bearer token.
func DialToken(addr, token string) (*Client, error) {
	c := &Client{token: token}
	tr := &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute, DisableCompression: true}
	if strings.HasPrefix(addr, "http://") || strings.HasPrefix(addr, "https://") {
		c.base = strings.TrimRight(addr, "/")
	} else {
		socket := addr
		c.socket = socket
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		}
		c.base = "http://modelcache"
	}
	c.http = &http.Client{Transport: tr}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, api.PathStats, nil, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return c, nil
}

// FromEnvironment dials $MODELCACHE_SERVER (with $MODELCACHE_SERVER_TOKEN);
// ok false when it is not set.
func FromEnvironment() (c *Client, ok bool, err error) {
	addr := os.Getenv("MODELCACHE_SERVER")
	if addr == "" {
		return nil, false, nil
	}
	c, err = DialToken(addr, os.Getenv("MODELCACHE_SERVER_TOKEN"))
	return c, true, err
}

// Close releases idle connections.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// do sends a request and turns error responses into errors wrapping the
// sentinel the daemon named.
func (c *Client) do(ctx context.Context, method, path string, body io.Reader, hdr http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if b, ok := body.(*sizedBody); ok {
		req.ContentLength = b.n
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", ErrNoServer, err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	var e api.Error
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e); err != nil {
		return nil, fmt.Errorf("client: %s %s: %s", method, path, resp.Status)
	}
	return nil, remote(e.Error, e.Sentinel)
}

// remote is an error the daemon reported: its message, wrapping the
// sentinel it named, if it named one this build knows.
func remote(msg, sentinelName string) error {
	return &remoteError{msg: msg, sentinel: sentinel(sentinelName)}
}

// sentinel is the error a sentinel name from the daemon stands for.
func sentinel(name string) error {
	if name == api.NotExist {
		return fs.ErrNotExist
	}
	return errs.ByName(name)
}

// remoteError is an error the daemon returned: its message, and the
// sentinel it wrapped (nil: none).
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// Model describes a model as the daemon's cache sees it.
type Model = api.Model

// TensorInfo describes one tensor of a Model.
type TensorInfo = api.TensorInfo

// PutOptions describes a value being stored (tier.PutOptions converts to
// it: (*client.PutOptions)(o)).
type PutOptions = api.PutOptions

// Stats are the daemon's cache's tier.Stats, as JSON carries them.
type Stats = api.Stats

// WarmProgress reports one step of Warm (tier.WarmProgress).
type WarmProgress = api.WarmProgress

// WarmResult says what Warm did (tier.WarmResult).
type WarmResult = api.WarmResult

// Model lists the tensors of the model at path (a file, a checkpoint, or
// an hf:/ollama: name, resolved by the daemon).
func (c *Client) Model(ctx context.Context, path string) (*Model, error) {
	p, err := absPath(path)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodGet, api.ModelPath(p), nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m Model
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return nil, c.readErr(ctx, "model listing", err)
	}
	return &m, nil
}

// absPath is path as the daemon, whose working directory is not ours, must
// get it: absolute, unless it is a name (hf:, ollama:) the daemon resolves.
func absPath(path string) (string, error) {
	p, err := resolve.Abs(path)
	if err != nil {
		return "", fmt.Errorf("client: %s: %w", path, err)
	}
	return p, nil
}

// Tensor is a tensor read through the daemon.
type Tensor struct {
	Name     string
	DType    string
	Shape    []uint64
	ServedBy string // the daemon's tier: l1, l2, l3, source, shared
	Data     []byte
}

// Tensor reads one tensor of the model at path.
func (c *Client) Tensor(ctx context.Context, path, name string) (*Tensor, error) {
	s, err := c.OpenTensor(ctx, path, name)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	t := &Tensor{Name: name, DType: s.DType, Shape: s.Shape, ServedBy: s.ServedBy}
	if t.Data, err = readBody(s.resp); err != nil {
		return nil, c.readErr(ctx, "tensor "+errs.Quote(name), err)
	}
	return t, nil
}

// TensorStream is a tensor's bytes as they arrive from the daemon, for
// tensors too large to hold whole: an io.ReadCloser of Size bytes.
type TensorStream struct {
	Name, DType, ServedBy string
	Shape                 []uint64
	Size                  int64
	resp                  *http.Response
	c                     *Client
	ctx                   context.Context
}

// Read reads the bytes as they arrive; a daemon that went away meanwhile
// is ErrNoServer.
func (s *TensorStream) Read(p []byte) (int, error) {
	n, err := s.resp.Body.Read(p)
	if err != nil && err != io.EOF {
		err = s.c.readErr(s.ctx, "reading "+errs.Quote(s.Name), err)
	}
	return n, err
}

// Close releases the stream.
func (s *TensorStream) Close() error { return s.resp.Body.Close() }

// OpenTensor opens one tensor of the model at path for reading as it
// arrives. Close it.
func (c *Client) OpenTensor(ctx context.Context, path, name string) (*TensorStream, error) {
	path, err := absPath(path)
	if err != nil {
		return nil, err
	}
	q := url.Values{"path": {path}, "name": {name}}
	resp, err := c.do(ctx, http.MethodGet, api.PathTensor+"?"+q.Encode(), nil, nil)
	if err != nil {
		return nil, err
	}
	s := &TensorStream{Name: name, DType: resp.Header.Get(api.HeaderDType), ServedBy: resp.Header.Get(api.HeaderServedBy), Size: resp.ContentLength, resp: resp, c: c, ctx: ctx}
	if s.Shape, err = parseShape(resp.Header.Get(api.HeaderShape)); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return s, nil
}

// readBody reads a response whose length the daemon declared.
func readBody(resp *http.Response) ([]byte, error) {
	if resp.ContentLength < 0 {
		return io.ReadAll(resp.Body)
	}
	b := make([]byte, resp.ContentLength)
	_, err := io.ReadFull(resp.Body, b)
	return b, err
}

// parseShape parses the daemon's shape header.
func parseShape(s string) ([]uint64, error) {
	shape, err := api.ParseShape(s)
	if err != nil {
		return nil, fmt.Errorf("client: shape %q from the daemon: %w", s, err)
	}
	return shape, nil
}

// Load reads every tensor of the model at path, in storage order, and calls
// each with it; parallel tensors are read at once (default 4).
func (c *Client) Load(ctx context.Context, path string, parallel int, each func(*Tensor) error) error {
	m, err := c.Model(ctx, path)
	if err != nil {
		return err
	}
	return inOrder(ctx, len(m.Tensors), parallel, func(ctx context.Context, i int) (*Tensor, error) {
		return c.Tensor(ctx, path, m.Tensors[i].Name)
	}, each, nil)
}

// inOrder fetches items 0..n-1, parallel at once (default 4), and hands
// them to each in order; drop, if not nil, releases fetched items each
// never got (after an error).
func inOrder[T any](ctx context.Context, n, parallel int, fetch func(context.Context, int) (T, error), each func(T) error, drop func(T)) error {
	if parallel <= 0 {
		parallel = 4
	}
	type result struct {
		v   T
		err error
	}
	results := make([]chan result, n)
	for i := range results {
		results[i] = make(chan result, 1)
	}
	ctx, cancel := context.WithCancel(ctx)
	sem := make(chan struct{}, parallel)
	started := make(chan int, 1)
	go func() {
		k := 0
		defer func() { started <- k }()
		for i := range n {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			k++
			go func() {
				v, err := fetch(ctx, i)
				results[i] <- result{v, err}
			}()
		}
	}()
	var err error
	next := 0 // items before it were handed to each (or failed)
	for next < n && err == nil {
		var r result
		select {
		case r = <-results[next]:
		case <-ctx.Done():
			err = ctx.Err()
			continue
		}
		next++
		<-sem
		if err = r.err; err == nil {
			err = each(r.v)
		}
	}
	cancel()
	// Wait for what was started, and release what each never got.
	k := <-started
	for i := next; i < k; i++ {
		if r := <-results[i]; r.err == nil && drop != nil {
			drop(r.v)
		}
	}
	return err
}

// Value is a value read through the daemon.
type Value struct {
	ServedBy string
	DType    string
	Shape    []uint64
	Data     []byte
}

// Get reads the value under key in namespace ns: errs.ErrNotFound when it
// is not cached. (The daemon cannot call a fill function of this process:
// compute on a miss and Put.)
func (c *Client) Get(ctx context.Context, ns, key string) (*Value, error) {
	resp, err := c.do(ctx, http.MethodGet, api.ValuePath(ns, key), nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	v := &Value{ServedBy: resp.Header.Get(api.HeaderServedBy), DType: resp.Header.Get(api.HeaderDType)}
	if v.Shape, err = parseShape(resp.Header.Get(api.HeaderShape)); err != nil {
		return nil, err
	}
	if v.Data, err = readBody(resp); err != nil {
		return nil, c.readErr(ctx, "value "+errs.Quote(key), err)
	}
	return v, nil
}

// ValueStream is a value's bytes as they arrive from the daemon, for
// values too large to hold whole (Name is the key).
type ValueStream = TensorStream

// OpenValue opens the value under key in namespace ns for reading as it
// arrives: errs.ErrNotFound when it is not cached. Close it.
func (c *Client) OpenValue(ctx context.Context, ns, key string) (*ValueStream, error) {
	resp, err := c.do(ctx, http.MethodGet, api.ValuePath(ns, key), nil, nil)
	if err != nil {
		return nil, err
	}
	s := &ValueStream{Name: key, DType: resp.Header.Get(api.HeaderDType), ServedBy: resp.Header.Get(api.HeaderServedBy), Size: resp.ContentLength, resp: resp, c: c, ctx: ctx}
	if s.Shape, err = parseShape(resp.Header.Get(api.HeaderShape)); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return s, nil
}

// Put stores b under key in namespace ns.
func (c *Client) Put(ctx context.Context, ns, key string, b []byte, o *PutOptions) error {
	resp, err := c.do(ctx, http.MethodPut, api.ValuePath(ns, key), bytes.NewReader(b), api.PutHeader(o))
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Delete removes the value under key in namespace ns.
func (c *Client) Delete(ctx context.Context, ns, key string) error {
	resp, err := c.do(ctx, http.MethodDelete, api.ValuePath(ns, key), nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// DropNamespace drops every value of ns.
func (c *Client) DropNamespace(ctx context.Context, ns string) error {
	resp, err := c.do(ctx, http.MethodDelete, api.NamespacePath(ns), nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Stats returns the daemon's cache's Stats.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	resp, err := c.do(ctx, http.MethodGet, api.PathStats, nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var s Stats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, c.readErr(ctx, "stats", err)
	}
	return &s, nil
}

// Warm has the daemon warm the model at path; progress, if not nil, gets
// each tensor as it is stored.
func (c *Client) Warm(ctx context.Context, path string, progress func(WarmProgress)) (*WarmResult, error) {
	path, err := absPath(path)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(ctx, http.MethodPost, api.PathWarm+"?"+url.Values{"path": {path}}.Encode(), nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line struct {
			WarmProgress
			Result   *WarmResult `json:"result"`
			Error    string      `json:"error"`
			Sentinel string      `json:"sentinel"`
		}
		if err := dec.Decode(&line); err != nil {
			return nil, c.readErr(ctx, "warm", err)
		}
		switch {
		case line.Error != "":
			return nil, remote(line.Error, line.Sentinel)
		case line.Result != nil:
			return line.Result, nil
		case progress != nil:
			progress(line.WarmProgress)
		}
	}
}
