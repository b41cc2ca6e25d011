package client

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/modelcache/modelcache/tier"
)

// PutReader stores what r yields as the value under key in namespace ns,
// sent as it is read, never held whole: size bytes, or with size -1 until
// r ends (the request is then chunked).
func (c *Client) PutReader(ctx context.Context, ns, key string, r io.Reader, size int64, o *tier.PutOptions) error {
	hdr := http.Header{}
	if o != nil {
		if o.TTL > 0 {
			hdr.Set("X-TTL", o.TTL.String())
		}
		if o.DType != "" {
			hdr.Set("X-Dtype", o.DType)
		}
		if len(o.Shape) > 0 {
			parts := make([]string, len(o.Shape))
			for i, d := range o.Shape {
				parts[i] = strconv.FormatUint(d, 10)
			}
			hdr.Set("X-Shape", strings.Join(parts, ","))
		}
	}
	var body io.Reader = r
	if size >= 0 {
		body = &sizedBody{r, size}
	}
	resp, err := c.do(ctx, http.MethodPut, valuePath(ns, key), body, hdr)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// sizedBody is a request body of a known length, which do sends as its
// Content-Length (http.NewRequest knows only the lengths of in-memory
// readers).
type sizedBody struct {
	io.Reader
	n int64
}

// ValueStream is a value's bytes as they arrive from the daemon: an
// io.ReadCloser of Size bytes.
type ValueStream struct {
	ServedBy, DType string
	Shape           []uint64
	Size            int64
	resp            *http.Response
}

func (s *ValueStream) Read(p []byte) (int, error) { return s.resp.Body.Read(p) }

// Close releases the stream.
func (s *ValueStream) Close() error { return s.resp.Body.Close() }

// OpenValue opens the value under key in namespace ns for reading as it
// arrives (errs.ErrNotFound when it is not cached). Close it.
func (c *Client) OpenValue(ctx context.Context, ns, key string) (*ValueStream, error) {
	resp, err := c.do(ctx, http.MethodGet, valuePath(ns, key), nil, nil)
	if err != nil {
		return nil, err
	}
	s := &ValueStream{ServedBy: resp.Header.Get("X-Served-By"), DType: resp.Header.Get("X-Dtype"), Size: resp.ContentLength, resp: resp}
	if s.Shape, err = parseShape(resp.Header.Get("X-Shape")); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return s, nil
}
