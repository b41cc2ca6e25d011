//go:build linux

package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/modelcache/modelcache/tier"
)

// tcpDaemon serves a Handler with o on a loopback TCP port; clients may
// come from any 127.0.0.0/8 address, each a peer of its own.
func tcpDaemon(t *testing.T, o *Options) string {
	t.Helper()
	c, err := tier.Open(&tier.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := New(c, o)
	srv := Server(h)
	go srv.Serve(l)
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		c.Close()
	})
	return l.Addr().String()
}

func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// status sends req on c and returns the answer's status code, or 0 if the
// connection was closed first.
func answerStatus(t *testing.T, c net.Conn, req string) int {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(20*time.Second)))
	if _, err := io.WriteString(c, req); err != nil {
		return 0
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		require.False(t, isTimeout(err), "no answer and no close: %v", err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// A peer that holds its connections busy with bodies it never finishes
// (the slots are busy, not idle, so nothing else frees them) cannot take
// the slots of another peer: past its own bound, its new connections are
// refused, and another peer is still served. Then the stall bound ends
// the slow bodies.
func TestServer_OnePeerCannotTakeEverySlot(t *testing.T) {
	addr := tcpDaemon(t, &Options{MaxConnections: 8, MaxConnectionsPerPeer: 4, ReadStallTimeout: 2 * time.Second})
	slow := "PUT /v1/values/slow/k HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx"
	var held []net.Conn
	for range 12 {
		c := dialFrom(t, "127.0.0.2", addr)
		_, _ = io.WriteString(c, slow)
		held = append(held, c)
	}
	// Another peer: served at once, its requests a plain GET.
	other := dialFrom(t, "127.0.0.3", addr)
	require.Equal(t, http.StatusOK, answerStatus(t, other, "GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n"))
	// Of the 12, 4 are open (a short read times out); the rest were
	// closed at accept (a short read fails at once).
	open := 0
	b := make([]byte, 1)
	for _, c := range held {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(100*time.Millisecond)))
		_, err := c.Read(b)
		require.Error(t, err)
		if isTimeout(err) {
			open++
		}
	}
	require.Equal(t, 4, open, "the peer holds its share, no more")
	// The stall bound then ends the slow bodies.
	for _, c := range held {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(20*time.Second)))
		for {
			_, err := c.Read(b)
			if err != nil {
				require.False(t, isTimeout(err), "a slow body held its connection past the stall bound")
				break
			}
		}
	}
}

// A body that stops arriving ends its connection after the stall bound;
// one that arrives steadily, for longer than that bound in all, is read
// whole (the old whole-request ReadTimeout cut any PUT slower than it).
func TestServer_BodiesMustKeepArriving(t *testing.T) {
	const stall = time.Second
	addr := tcpDaemon(t, &Options{ReadStallTimeout: stall})

	c := dialFrom(t, "127.0.0.1", addr)
	require.Equal(t, http.StatusRequestTimeout, answerStatus(t, c, "PUT /v1/values/ns/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx"))
	b := make([]byte, 1)
	_, err := c.Read(b)
	require.Error(t, err, "the connection of a stalled body stays open")
	require.False(t, isTimeout(err), "the connection of a stalled body stays open")

	// 2 MiB in 64 KiB pieces, 50 ms apart: 256 KiB per 200 ms, five times
	// the pace the bound asks for, over about 1.6 s.
	const size, piece = 2 << 20, 64 << 10
	c = dialFrom(t, "127.0.0.1", addr)
	require.NoError(t, c.SetDeadline(time.Now().Add(60*time.Second)))
	_, err = fmt.Fprintf(c, "PUT /v1/values/ns/steady HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	require.NoError(t, err)
	start := time.Now()
	for sent := 0; sent < size; sent += piece {
		_, err := c.Write([]byte(strings.Repeat("v", piece)))
		require.NoError(t, err)
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	require.Greater(t, time.Since(start), stall, "the body did not outlast the bound: the test proves nothing")
}
