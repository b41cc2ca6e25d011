package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelcache/modelcache/server"
	"github.com/modelcache/modelcache/tier"
)

// shutdownWait bounds how long warm serve waits for requests in flight
// when told to stop.
const shutdownWait = 30 * time.Second

// defaultSocket is $XDG_RUNTIME_DIR/modelcache.sock, or serve.sock in the
// cache directory.
func defaultSocket(dir string) string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "modelcache.sock")
	}
	return filepath.Join(dir, "serve.sock")
}

func newServeCmd(g *globals) *cobra.Command {
	var socket, httpAddr, tokenFile string
	var roots []string
	var maxConns, maxPerPeer int
	cmd := &cobra.Command{
		Use:   "serve [flags]",
		Short: "Own the cache directory and serve every process on this machine",
		Long: `serve opens the cache directory (and L3, with --redis) and serves its
tensors and values to every process on the machine: over a unix socket
(--socket, mode 0660; default $XDG_RUNTIME_DIR/modelcache.sock, else
serve.sock in the cache directory) and, with --http, over TCP. --http binds
to loopback addresses only, unless --http-token-file names a file holding a
bearer token that every request must then carry.

Clients read files by absolute path only inside the trees named by --root
(repeatable; env MODELCACHE_ROOTS, colon-separated): a path is resolved
(symlinks, .., /proc) and one outside every root is refused (403). hf: and
ollama: names read their caches. With no --root, no file is read by path.

The API is HTTP on both (docs/SERVE.md): GET /v1/models/{path},
GET /v1/tensor?path=P&name=N (Range supported), POST /v1/warm?path=P,
GET /v1/stats, GET /metrics, GET|PUT|DELETE /v1/values/{ns}/{key},
DELETE /v1/values/{ns}. Go programs use package client, or set
MODELCACHE_SERVER for warm get, load and stats.

SIGTERM or SIGINT: stop accepting, finish requests in flight (up to 30 s),
write what is queued for L2 and L3, exit 0.`,
		Example: `  warm serve --dir /var/cache/modelcache --root /models
  warm serve --root /models --root /srv/checkpoints --socket /run/modelcache/modelcache.sock --http 127.0.0.1:7480
  curl --unix-socket /run/user/1000/modelcache.sock 'http://x/v1/tensor?path=/models/m/model.safetensors&name=w' > w.bin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if maxConns <= 0 {
				return usageError{fmt.Errorf("--max-connections %d: want at least 1", maxConns)}
			}
			if maxPerPeer < 0 {
				return usageError{fmt.Errorf("--max-connections-per-peer %d: want at least 1 (0: a quarter of --max-connections)", maxPerPeer)}
			}
			if socket == "" {
				socket = defaultSocket(g.dir)
			}
			roots, err := checkRoots(roots)
			if err != nil {
				return err
			}
			token := ""
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return fmt.Errorf("--http-token-file: %w", err)
				}
				if token = strings.TrimSpace(string(b)); token == "" {
					return fmt.Errorf("--http-token-file: %s is empty", tokenFile)
				}
			}
			var tcp net.Listener
			if httpAddr != "" {
				host, _, err := net.SplitHostPort(httpAddr)
				if err != nil {
					return usageError{fmt.Errorf("--http: %w", err)}
				}
				if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && token == "" {
					return usageError{fmt.Errorf("--http %s is not a loopback address: give --http-token-file", httpAddr)}
				}
				if tcp, err = net.Listen("tcp", httpAddr); err != nil {
					return err
				}
			}
			unix, err := listenUnix(socket)
			if err != nil {
				if tcp != nil {
					tcp.Close()
				}
				return err
			}
			c, err := g.open()
			if err != nil {
				unix.Close()
				if tcp != nil {
					tcp.Close()
				}
				return err
			}
			fmt.Fprintln(g.stderr, "warm serve: "+l3State(cmdContext(cmd), g, c))
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return serve(ctx, g, c, unix, tcp, token, roots, maxConns, maxPerPeer)
		},
	}
	f := cmd.Flags()
	f.StringVar(&socket, "socket", envOr("MODELCACHE_SOCKET", ""), "unix socket to serve on (env MODELCACHE_SOCKET)")
	f.StringVar(&httpAddr, "http", "", "also serve HTTP on this TCP address (loopback, unless --http-token-file)")
	f.StringVar(&tokenFile, "http-token-file", "", "file holding the bearer token that TCP requests must carry")
	f.StringArrayVar(&roots, "root", splitRoots(os.Getenv("MODELCACHE_ROOTS")), "a directory whose files clients may read by path (repeatable; env MODELCACHE_ROOTS, colon-separated); none: paths are refused")
	f.IntVar(&maxConns, "max-connections", server.DefaultMaxConnections, "connections each listener keeps at most (the longest idle are closed for new ones)")
	f.IntVar(&maxPerPeer, "max-connections-per-peer", 0, "connections one peer (a uid on the socket, an IP address on TCP) keeps at most on each listener (0: a quarter of --max-connections)")
	return cmd
}

// splitRoots splits MODELCACHE_ROOTS.
func splitRoots(s string) []string {
	var out []string
	for _, r := range strings.Split(s, ":") {
		if r != "" {
			out = append(out, r)
		}
	}
	return out
}

// checkRoots makes the roots absolute and checks that each is a directory:
// a mistyped root would refuse every path under the one meant.
func checkRoots(roots []string) ([]string, error) {
	out := make([]string, 0, len(roots))
	for _, r := range roots {
		abs, err := filepath.Abs(r)
		if err != nil {
			return nil, usageError{fmt.Errorf("--root %s: %w", r, err)}
		}
		fi, err := os.Stat(abs)
		if err != nil {
			return nil, usageError{fmt.Errorf("--root %s: %w", r, err)}
		}
		if !fi.IsDir() {
			return nil, usageError{fmt.Errorf("--root %s: not a directory", r)}
		}
		out = append(out, abs)
	}
	return out, nil
}

// listenUnix listens on a unix socket with mode 0660, replacing a stale
// socket but not a daemon that answers on it, and nothing that is not a
// socket (a file given by mistake is not deleted).
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("--socket %s: it exists and is not a socket (%s); not removed", path, fileType(fi.Mode()))
		}
		if conn, err := net.DialTimeout("unix", path, time.Second); err == nil {
			conn.Close()
			return nil, fmt.Errorf("%s: a warm serve is already running there", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// fileType names what is at a path, for messages.
func fileType(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	}
	return m.Type().String()
}

// serve serves until ctx ends, then shuts down in order: no new requests,
// those in flight finished (bounded), the cache closed (its queued writes
// done).
func serve(ctx context.Context, g *globals, c *tier.Cache, unix, tcp net.Listener, token string, roots []string, maxConns, maxPerPeer int) error {
	// Chunked PUTs spool in the cache directory: on disk, not in a /tmp
	// that may be RAM.
	o := server.Options{MaxConnections: maxConns, MaxConnectionsPerPeer: maxPerPeer, SpoolDir: g.dir, Roots: roots}
	localH := server.New(c, &o)
	o.Token = token
	remoteH := server.New(c, &o)
	defer localH.Close()
	defer remoteH.Close()
	local := server.Server(localH)
	var remote *http.Server
	errc := make(chan error, 2)
	go func() { errc <- local.Serve(unix) }()
	if tcp != nil {
		remote = server.Server(remoteH)
		go func() { errc <- remote.Serve(tcp) }()
	}
	fmt.Fprintf(g.stderr, "warm serve: %s on %s", g.dir, unix.Addr())
	if tcp != nil {
		fmt.Fprintf(g.stderr, " and http://%s", tcp.Addr())
	}
	fmt.Fprintln(g.stderr)
	if len(roots) == 0 {
		fmt.Fprintln(g.stderr, "warm serve: no --root: clients read no file by path, only hf: and ollama: names")
	} else {
		fmt.Fprintf(g.stderr, "warm serve: clients may read files in %s\n", strings.Join(roots, ", "))
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownWait)
	defer cancel()
	err := local.Shutdown(sctx)
	if remote != nil {
		err = errors.Join(err, remote.Shutdown(sctx))
	}
	err = errors.Join(err, c.Close())
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		err = errors.Join(serveErr, err)
	}
	if err == nil {
		fmt.Fprintln(g.stderr, "warm serve: stopped")
	}
	return err
}
