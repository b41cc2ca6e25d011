package client

import (
	"context"
	"io"
	"net/http"

	"github.com/modelcache/modelcache/api"
)

// PutReader stores what r yields as the value under key in namespace ns,
// sent as it is read, never held whole: size bytes, or with size -1 until
// r ends (the request is then chunked).
func (c *Client) PutReader(ctx context.Context, ns, key string, r io.Reader, size int64, o *PutOptions) error {
	hdr := api.PutHeader(o)
	var body io.Reader = r
	if size >= 0 {
		body = &sizedBody{r, size}
	}
	resp, err := c.do(ctx, http.MethodPut, api.ValuePath(ns, key), body, hdr)
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
