package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/modelcache/modelcache/client"
	"github.com/modelcache/modelcache/errs"
	"github.com/modelcache/modelcache/tier"
)

// wireStats is s as a daemon sends it (client.Stats), for output that
// shows either: through JSON, so that no field is left behind.
func wireStats(s tier.Stats) (*client.Stats, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("warm: stats: %w", err)
	}
	var out client.Stats
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("warm: stats: %w", err)
	}
	return &out, nil
}

// daemonSockets are where a warm serve of dir listens unless told
// otherwise (--socket): serve.sock in the directory, and
// $XDG_RUNTIME_DIR/modelcache.sock (defaultSocket).
func daemonSockets(dir string) []string {
	socks := []string{filepath.Join(dir, "serve.sock")}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		socks = append(socks, filepath.Join(d, "modelcache.sock"))
	}
	return socks
}

// findDaemon is the warm serve that holds g.dir, found at one of
// daemonSockets and checked to serve that very directory (the one in
// $XDG_RUNTIME_DIR may serve another), or nil.
func (g *globals) findDaemon() *client.Client {
	mine, err := os.Stat(g.dir)
	if err != nil {
		return nil
	}
	for _, s := range daemonSockets(g.dir) {
		if fi, err := os.Stat(s); err != nil || fi.Mode()&os.ModeSocket == 0 {
			continue
		}
		d, err := client.Dial(s)
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := d.Stats(ctx)
		cancel()
		if err == nil {
			if fi, err := os.Stat(st.L2.Dir); err == nil && os.SameFile(fi, mine) {
				return d
			}
		}
		d.Close()
	}
	return nil
}

// openOrDaemon opens the cache directory, or, when a warm serve holds it,
// returns a client of that daemon (found by findDaemon). A directory that
// cannot be used otherwise is, with g.optionalL2, a warning, and the
// files are read directly.
func (g *globals) openOrDaemon() (*tier.Cache, *client.Client, error) {
	optional := g.optionalL2
	g.optionalL2 = false
	c, err := g.open()
	g.optionalL2 = optional
	if err == nil {
		return c, nil, nil
	}
	if errors.Is(err, errs.ErrLocked) {
		if d := g.findDaemon(); d != nil {
			return nil, d, nil
		}
	}
	var u usageError
	if optional && !errors.As(err, &u) {
		if c, err := g.open(); err == nil {
			return c, nil, nil
		}
	}
	return nil, nil, g.lockedHint(err, true)
}

// viaDaemonOr runs remote with the daemon named by --server, or with the
// one holding the cache directory; else it opens the directory and runs
// local.
func (g *globals) viaDaemonOr(remote func(*client.Client) error, local func(*tier.Cache) error) error {
	if d := g.daemon(); d != nil {
		defer d.Close()
		return remote(d)
	}
	c, d, err := g.openOrDaemon()
	if err != nil {
		return err
	}
	if d != nil {
		defer d.Close()
		return remote(d)
	}
	err = local(c)
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}

// lockedHint adds to an error of a directory in use what to do about it:
// give --server (canDaemon: the command can work through a daemon), or
// stop the warm serve that holds it.
func (g *globals) lockedHint(err error, canDaemon bool) error {
	if !errors.Is(err, errs.ErrLocked) {
		return err
	}
	if canDaemon {
		// openOrDaemon looked for the daemon and found none.
		return fmt.Errorf("%w: if a warm serve holds it, give its socket with --server (none answers on %s)", err, strings.Join(daemonSockets(g.dir), " or "))
	}
	if d := g.findDaemon(); d != nil {
		d.Close()
		return fmt.Errorf("%w: %s needs the cache directory itself, and a warm serve holds it: stop that daemon first", err, g.command)
	}
	return fmt.Errorf("%w: %s needs the cache directory itself: stop the process that holds it (a warm serve?) first", err, g.command)
}
