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
	hdr := valueHeader(o)
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

// valueHeader is the request header that carries o.
func valueHeader(o *tier.PutOptions) http.Header {
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
	return hdr
}
