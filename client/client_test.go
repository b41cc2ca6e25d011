package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/loader"
	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

const testModel = "../testdata/models/posenet.bf16.safetensors"

// daemon serves a cache on a unix socket in this process, as warm serve
// does, and returns the socket and the cache.
func daemon(t *testing.T, token string) (socket string, c *tier.Cache) {
	t.Helper()
	c, err := tier.Open(&tier.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	socket = filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", socket)
	require.NoError(t, err)
	h := server.New(c, &server.Options{Token: token, Roots: []string{"/"}})
	srv := server.Server(h)
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		c.Close()
	})
	return socket, c
}

func fileBytes(t *testing.T, name string) []byte {
	t.Helper()
	f, err := loader.Open(testModel)
	require.NoError(t, err)
	defer f.Close()
	b, err := f.ReadTensor(name)
	require.NoError(t, err)
	return b
}

func abs(t *testing.T) string {
	p, err := filepath.Abs(testModel)
	require.NoError(t, err)
	return p
}

func TestClient_TensorsAndModels(t *testing.T) {
	socket, _ := daemon(t, "")
	c, err := Dial(socket)
	require.NoError(t, err)
	defer c.Close()
	ctx := context.Background()
	m, err := c.Model(ctx, abs(t))
	require.NoError(t, err)
	require.Len(t, m.Tensors, 62)
	require.Equal(t, abs(t), m.Path)

	tn, err := c.Tensor(ctx, abs(t), "Const_61")
	require.NoError(t, err)
	require.Equal(t, "source", tn.ServedBy)
	require.Equal(t, "BF16", tn.DType)
	require.Equal(t, []uint64{1, 1, 384, 32}, tn.Shape)
	require.Equal(t, fileBytes(t, "Const_61"), tn.Data)
	tn, err = c.Tensor(ctx, abs(t), "Const_61")
	require.NoError(t, err)
	require.Equal(t, "l1", tn.ServedBy)

	n := 0
	require.NoError(t, c.Load(ctx, abs(t), 4, func(tn *Tensor) error {
		if string(tn.Data) != string(fileBytes(t, tn.Name)) {
			return fmt.Errorf("%s: wrong bytes", tn.Name)
		}
		n++
		return nil
	}))
	require.Equal(t, 62, n)

	_, err = c.Tensor(ctx, abs(t), "no such tensor")
	require.ErrorIs(t, err, errs.ErrNotFound)
	_, err = c.Model(ctx, "/no/such/model.safetensors")
	require.ErrorIs(t, err, fs.ErrNotExist)
	s, err := c.Stats(ctx)
	require.NoError(t, err)
	require.Positive(t, s.Tensors.Requests)
}

func TestClient_Values(t *testing.T) {
	socket, _ := daemon(t, "")
	c, err := Dial(socket)
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, c.Put(ctx, "out puts", "key/with slashes & spaces", []byte("v"), &PutOptions{DType: "U8", Shape: []uint64{1}}))
	v, err := c.Get(ctx, "out puts", "key/with slashes & spaces")
	require.NoError(t, err)
	require.Equal(t, "v", string(v.Data))
	require.Equal(t, "U8", v.DType)
	require.Equal(t, []uint64{1}, v.Shape)
	require.NoError(t, c.Delete(ctx, "out puts", "key/with slashes & spaces"))
	_, err = c.Get(ctx, "out puts", "key/with slashes & spaces")
	require.ErrorIs(t, err, errs.ErrNotFound)

	require.NoError(t, c.Put(ctx, "ns", "a", []byte("1"), nil))
	require.NoError(t, c.DropNamespace(ctx, "ns"))
	_, err = c.Get(ctx, "ns", "a")
	require.ErrorIs(t, err, errs.ErrNotFound)
	err = c.Put(ctx, "ns", "a", make([]byte, 3), &PutOptions{DType: "F32", Shape: []uint64{1}})
	require.ErrorIs(t, err, errs.ErrInvalidArgument)
}

func TestClient_Warm(t *testing.T) {
	socket, cache := daemon(t, "")
	c, err := Dial(socket)
	require.NoError(t, err)
	var lines int
	res, err := c.Warm(context.Background(), abs(t), func(WarmProgress) { lines++ })
	require.NoError(t, err)
	require.Equal(t, 62, res.Tensors)
	require.Equal(t, 63, lines, "the totals, then a line per tensor")
	n, _, _, err := cache.FileEntries(abs(t))
	require.NoError(t, err)
	require.Equal(t, 62, n)
}

// 64 clients at once, every byte right.
func TestClient_ManyAtOnce(t *testing.T) {
	socket, _ := daemon(t, "")
	want := fileBytes(t, "Const_59")
	manyClients(t, socket, 64, func(c *Client) error {
		for range 5 {
			tn, err := c.Tensor(context.Background(), abs(t), "Const_59")
			if err != nil {
				return err
			}
			if string(tn.Data) != string(want) {
				return errors.New("wrong bytes")
			}
		}
		return nil
	})
}

// manyClients runs fn on n clients of the daemon at once, each with its
// own connections, and fails the test on any error.
func manyClients(t *testing.T, socket string, n int, fn func(c *Client) error) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for range n {
		wg.Go(func() {
			c, err := Dial(socket)
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			errc <- fn(c)
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		require.NoError(t, err)
	}
}

// Malformed requests get a 4xx, with a JSON error where the API answers.
func TestServer_MalformedRequests(t *testing.T) {
	socket, _ := daemon(t, "")
	raw := func(req string) string {
		conn, err := net.Dial("unix", socket)
		require.NoError(t, err)
		defer conn.Close()
		_, _ = io.WriteString(conn, req)
		b := make([]byte, 512)
		n, _ := conn.Read(b)
		return string(b[:n])
	}
	require.Contains(t, raw("GET /v1/tensor?path=x HTTP/1.1\r\nHost: x\r\n\r\n"), "400 Bad Request")
	require.Contains(t, raw("GET /v1/tensor?path=x HTTP/1.1\r\nHost: x\r\n\r\n"), "ErrInvalidArgument")
	require.Contains(t, raw("PATCH /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n"), "405")
	require.Contains(t, raw("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"), "404")
	require.Contains(t, raw("garbage\r\n\r\n"), "400")
	huge := "GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2*server.MaxHeaderBytes) + "\r\n\r\n"
	require.Contains(t, raw(huge), "431")
	require.Contains(t, raw("PUT /v1/values/ns/k HTTP/1.1\r\nHost: x\r\nX-TTL: soon\r\nContent-Length: 1\r\n\r\nx"), "400")
	big := fmt.Sprintf("PUT /v1/values/ns/k HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", int64(server.MaxValueBytes)+1)
	require.Contains(t, raw(big), "413")
}

// Over TCP a token is required when one is set.
func TestServer_BearerToken(t *testing.T) {
	c, err := tier.Open(&tier.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	defer c.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := server.Server(server.New(c, &server.Options{Token: "s3cret"}))
	go srv.Serve(l)
	defer srv.Close()
	base := "http://" + l.Addr().String()
	resp, err := http.Get(base + "/v1/stats")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	_, err = DialToken(base, "wrong")
	require.Error(t, err)
	cl, err := DialToken(base, "s3cret")
	require.NoError(t, err)
	_, err = cl.Stats(context.Background())
	require.NoError(t, err)
}

func TestClient_NoServer(t *testing.T) {
	_, err := Dial(filepath.Join(t.TempDir(), "absent.sock"))
	require.ErrorIs(t, err, ErrNoServer)
	t.Setenv("MODELCACHE_SERVER", "")
	_, ok, err := FromEnvironment()
	require.NoError(t, err)
	require.False(t, ok)
}

// Eight clients load one model at once through the daemon: each tensor is
// read from the file once, and every client gets the file's bytes.
func TestClient_EightLoadsReadTheOriginOnce(t *testing.T) {
	socket, cache := daemon(t, "")
	manyClients(t, socket, 8, func(c *Client) error {
		return c.Load(context.Background(), abs(t), 4, func(tn *Tensor) error {
			if string(tn.Data) != string(fileBytes(t, tn.Name)) {
				return fmt.Errorf("%s: wrong bytes", tn.Name)
			}
			return nil
		})
	})
	s := cache.Stats()
	require.Equal(t, uint64(62), s.SourceLoads, "one read of each tensor from the file")
	require.Equal(t, uint64(8*62), s.Requests)
}
