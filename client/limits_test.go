package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

// Idle connections cannot use up the daemon's descriptors: with 400 open
// and silent, a request is still served, and the daemon holds at most
// MaxConnections of them (the longest idle are closed for new ones).
func TestServer_ManyIdleConnectionsAreBounded(t *testing.T) {
	const max, idle = 16, 400
	d := startChild(t, server.Options{MaxConnections: max})
	base := d.fds(t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		c, err := net.Dial("unix", d.socket)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	// Every connection accepted (and the older ones closed): the last
	// one is answered.
	probe := func(c net.Conn) {
		_, err := io.WriteString(c, "GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n")
		require.NoError(t, err)
		var b [12]byte
		_, err = io.ReadFull(c, b[:])
		require.NoError(t, err)
		require.Equal(t, "HTTP/1.1 200", string(b[:]))
	}
	probe(conns[len(conns)-1])
	cl, err := Dial(d.socket)
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.Put(context.Background(), "ns", "k", []byte("v"), nil))
	v, err := cl.Get(context.Background(), "ns", "k")
	require.NoError(t, err)
	require.Equal(t, "v", string(v.Data))
	require.LessOrEqual(t, d.fds(t), base+max, "descriptors of the daemon with %d idle connections", idle)
}

// A client that asks for a large answer and never reads it loses the
// connection once a write has stalled for WriteStallTimeout; the daemon's
// descriptors fall back to where they were.
func TestServer_ClientThatStopsReadingIsDisconnected(t *testing.T) {
	d := startChild(t, server.Options{WriteStallTimeout: 200 * time.Millisecond})
	base := d.fds(t)
	cl, err := Dial(d.socket)
	require.NoError(t, err)
	defer cl.Close()
	big := make([]byte, 16<<20)
	_, _ = rand.Read(big)
	require.NoError(t, cl.Put(context.Background(), "ns", "big", big, nil))
	cl.Close()
	waitFor(t, "the client's connections closing", func() bool { return d.fds(t) <= base })
	c, err := net.Dial("unix", d.socket)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET /v1/values/ns/big HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	var first [1]byte
	_, err = io.ReadFull(c, first[:]) // the answer has begun
	require.NoError(t, err)
	// Read no more: the daemon's write stalls, and it closes the
	// connection (a write to it then fails: EPIPE).
	waitFor(t, "the daemon dropping the stalled connection", func() bool {
		_, err := c.Write([]byte("x"))
		return err != nil
	})
	// What it sent before is there, then the end, not all 16 MiB.
	n, _ := io.Copy(io.Discard, c)
	require.Less(t, n, int64(len(big)))
}

// A daemon killed while it sends a body: the reader's error is
// ErrNoServer, as for a daemon that is not there.
func TestClient_DaemonKilledMidBodyIsErrNoServer(t *testing.T) {
	d := startChild(t, server.Options{})
	cl, err := Dial(d.socket)
	require.NoError(t, err)
	defer cl.Close()
	ctx := context.Background()
	big := make([]byte, 32<<20)
	_, _ = rand.Read(big)
	require.NoError(t, cl.Put(ctx, "ns", "big", big, nil))
	s, err := cl.OpenValue(ctx, "ns", "big")
	require.NoError(t, err)
	defer s.Close()
	head := make([]byte, 1<<20)
	_, err = io.ReadFull(s, head)
	require.NoError(t, err)
	require.Equal(t, big[:len(head)], head)
	d.kill()
	_, err = io.Copy(io.Discard, s)
	require.ErrorIs(t, err, ErrNoServer)
	_, err = cl.Get(ctx, "ns", "big")
	require.ErrorIs(t, err, ErrNoServer)
}

// A daemon that ends one answer early and answers on is not ErrNoServer.
func TestClient_AnswerCutShortByALiveDaemonIsNotErrNoServer(t *testing.T) {
	socket, _ := daemon(t, "")
	cl, err := Dial(socket)
	require.NoError(t, err)
	defer cl.Close()
	err = cl.readErr(context.Background(), "value", io.ErrUnexpectedEOF)
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNoServer)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

// A chunked PUT (no Content-Length) streams: what it allocates follows
// that of the same PUT with its length (which streams into L2), not the
// value's size; and MaxValueBytes still holds.
func TestServer_ChunkedPutStreams(t *testing.T) {
	socket, _ := daemon(t, "")
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	const size = 96 << 20 // past tier.StreamAbove
	chunk := make([]byte, 1<<20)
	_, _ = rand.Read(chunk)
	put := func(key string, chunked bool) uint64 {
		var body io.Reader = &repeatReader{b: chunk, left: size}
		if chunked {
			body = struct{ io.Reader }{body} // no length known
		}
		req, err := http.NewRequest(http.MethodPut, "http://x/v1/values/ns/"+key, body)
		require.NoError(t, err)
		if !chunked {
			req.ContentLength = size
		}
		var before, after runtimeMem
		before.read()
		resp, err := hc.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusNoContent, resp.StatusCode)
		after.read()
		return after.total - before.total
	}
	withLength := put("sized", false)
	chunked := put("chunked", true)
	t.Logf("allocated: %d MiB with Content-Length, %d MiB chunked, for %d MiB", withLength>>20, chunked>>20, size>>20)
	require.Less(t, float64(chunked), 1.5*float64(withLength)+float64(8<<20), "a chunked PUT allocates as a streamed one")
	cl, err := Dial(socket)
	require.NoError(t, err)
	defer cl.Close()
	s, err := cl.OpenValue(context.Background(), "ns", "chunked")
	require.NoError(t, err)
	defer s.Close()
	require.EqualValues(t, size, s.Size)
	buf := make([]byte, len(chunk))
	for i := 0; i < size/len(chunk); i++ {
		_, err := io.ReadFull(s, buf)
		require.NoError(t, err)
		require.True(t, bytes.Equal(chunk, buf), "chunk %d", i)
	}
	// A small chunked body is stored as well.
	req, _ := http.NewRequest(http.MethodPut, "http://x/v1/values/ns/small", struct{ io.Reader }{strings.NewReader("hello")})
	resp, err := hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	v, err := cl.Get(context.Background(), "ns", "small")
	require.NoError(t, err)
	require.Equal(t, "hello", string(v.Data))
}

// daemonWith serves a cache opened with o (in a directory of the test's)
// on a unix socket in this process.
func daemonWith(t *testing.T, o *tier.Options) string {
	t.Helper()
	o.Dir = t.TempDir()
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := tier.Open(o)
	require.NoError(t, err)
	socket := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", socket)
	require.NoError(t, err)
	h := server.New(c, nil)
	srv := server.Server(h)
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		c.Close()
	})
	return socket
}

// repeatReader yields b again and again, left bytes in all.
type repeatReader struct {
	b    []byte
	left int
	off  int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.left)], r.b[r.off:])
	r.off = (r.off + n) % len(r.b)
	r.left -= n
	return n, nil
}

// A value GET racing PUTs and DELETEs of the same key: every 200 carries
// exactly the bytes it announces, and they are one of the versions put.
func TestServer_ValueGetRacingPutAndDelete(t *testing.T) {
	// L1 too small for the values, which are 16 chunks of L2 each: a GET
	// reads from L2, and meets an entry replaced mid-value.
	socket := daemonWith(t, &tier.Options{MemoryBytes: 256 << 10, ChunkSize: 64 << 10})
	cl, err := Dial(socket)
	require.NoError(t, err)
	defer cl.Close()
	ctx := context.Background()
	versions := make([][]byte, 3)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, 1<<20)
	}
	require.NoError(t, cl.Put(ctx, "ns", "k", versions[0], nil))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writeErr error
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var err error
			if i%4 == 3 {
				err = cl.Delete(ctx, "ns", "k")
			} else {
				err = cl.Put(ctx, "ns", "k", versions[i%len(versions)], nil)
			}
			if err != nil {
				writeErr = err
				return
			}
		}
	})
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	oks := 0
	for i := 0; i < 800 && oks < 200; i++ {
		resp, err := hc.Get("http://x/v1/values/ns/k")
		require.NoError(t, err)
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			require.Equal(t, http.StatusNotFound, resp.StatusCode)
			continue
		}
		oks++
		require.NoError(t, rerr, "a 200 whose body ended early")
		require.EqualValues(t, resp.ContentLength, len(body))
		found := false
		for _, v := range versions {
			found = found || bytes.Equal(v, body)
		}
		require.True(t, found, "a 200 with bytes of no version")
	}
	close(stop)
	wg.Wait()
	require.NoError(t, writeErr)
	require.Positive(t, oks)
	t.Logf("%d answers of 200", oks)
}

// Many ranges in one request are refused before any byte is read.
func TestServer_ManyRangesRefused(t *testing.T) {
	socket, _ := daemon(t, "")
	cl, err := Dial(socket)
	require.NoError(t, err)
	defer cl.Close()
	val := make([]byte, 1<<20)
	_, _ = rand.Read(val)
	require.NoError(t, cl.Put(context.Background(), "ns", "k", val, nil))
	get := func(n int) *http.Response {
		specs := make([]string, n)
		for i := range specs {
			specs[i] = fmt.Sprintf("%d-%d", i*100, i*100)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://x/v1/values/ns/k", nil)
		req.Header.Set("Range", "bytes="+strings.Join(specs, ","))
		resp, err := cl.http.Do(req)
		require.NoError(t, err)
		return resp
	}
	resp := get(3000)
	resp.Body.Close()
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, resp.StatusCode)
	resp = get(server.MaxRanges)
	defer resp.Body.Close()
	require.Equal(t, http.StatusPartialContent, resp.StatusCode)
	_, err = io.Copy(io.Discard, resp.Body)
	require.NoError(t, err)
}
